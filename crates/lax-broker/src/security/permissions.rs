//! Per-token permissions: which subjects a caller may publish to and read, and whether it may
//! manage streams.
//!
//! A permissions file (JSON, `--permissions-file`) lists the tokens the broker accepts, each
//! with its grants. NATS wildcards work as in NATS (`*` one token, `>` one or more at the
//! end); a deny pattern wins over an allow pattern:
//!
//! ```json
//! {"tokens": [
//!   {"name": "orders-service", "token": "s3cret",
//!    "publish": {"allow": ["orders.>"], "deny": ["orders.internal.>"]},
//!    "subscribe": {"allow": ["orders.>"]}},
//!   {"name": "ops", "token": "0ps-t0ken", "publish": {"allow": [">"]},
//!    "subscribe": {"allow": [">"]}, "admin": true}
//! ]}
//! ```
//!
//! Checks run before anything reaches JetStream:
//!
//! - a **publish** subject must be matched by an allow pattern and no deny pattern;
//! - a **subscription** subject (maybe a wildcard) must lie wholly inside one allow pattern
//!   and share no subject with a deny pattern, so `orders.>` cannot read `>` or `*.x`;
//! - a subject that is not well formed (empty tokens as in `a..b`, whitespace; a wildcard
//!   in a publish subject) is INVALID_ARGUMENT whoever sends it, and a wildcard in the first token never covers system subjects (`$JS.API.…`,
//!   `$SYS.…`): those need a pattern naming them. The all-access grant a broker without a
//!   permissions file gives every caller is `>`, so nobody reaches the JetStream API through
//!   the publish path;
//! - **admin** (stream create, update, delete; consumer groups) is a flag; reading stream
//!   info and the stream list needs no more than a valid token.

use std::{fmt, path::Path, sync::Arc};

use serde::Deserialize;
use subtle::ConstantTimeEq;
use tonic::Status;

use super::{SecretString, read_file};
use crate::error::BrokerError;

/// The tokens a broker accepts and what each may do.
#[derive(Clone)]
pub struct Permissions {
    tokens: Vec<(SecretString, Arc<Grant>)>,
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(_, g)| g.name.as_str()).collect();
        f.debug_struct("Permissions")
            .field("tokens", &names)
            .finish()
    }
}

/// The file's layout.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionsFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    #[serde(default)]
    publish: SubjectRules,
    #[serde(default)]
    subscribe: SubjectRules,
    #[serde(default)]
    admin: bool,
}

/// What one caller may do.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// Who this is, for logs and refusals (never the token).
    name: String,
    publish: SubjectRules,
    subscribe: SubjectRules,
    admin: bool,
}

/// Allow and deny patterns for one kind of access.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectRules {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// Reads a permissions file's layout (in a broker config file) as [`Permissions`].
pub(crate) fn deserialize_optional_permissions<'de, D>(
    deserializer: D,
) -> Result<Option<Permissions>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<PermissionsFile>::deserialize(deserializer)?
        .map(Permissions::checked)
        .transpose()
        .map_err(serde::de::Error::custom)
}

impl Permissions {
    /// Reads and checks a permissions file (for `--permissions-file`).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Config`] naming the file and what is wrong in it.
    pub fn from_file(path: &Path) -> Result<Self, BrokerError> {
        let bytes = read_file("--permissions-file", path)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            BrokerError::Config(format!("--permissions-file {}: not UTF-8", path.display()))
        })?;
        Self::from_json(&text)
            .map_err(|e| BrokerError::Config(format!("--permissions-file {}: {e}", path.display())))
    }

    /// Parses and checks a permissions file's text.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Config`] saying what is wrong in it.
    pub fn from_json(text: &str) -> Result<Self, BrokerError> {
        let file: PermissionsFile = serde_json::from_str(text)
            .map_err(|e| BrokerError::Config(format!("permissions: {e}")))?;
        Self::checked(file).map_err(|e| BrokerError::Config(format!("permissions: {e}")))
    }

    fn checked(file: PermissionsFile) -> Result<Self, String> {
        if file.tokens.is_empty() {
            return Err("no tokens: nobody could call the broker".into());
        }
        let mut tokens: Vec<(SecretString, Arc<Grant>)> = Vec::new();
        for entry in file.tokens {
            let token = entry.token.as_str();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "the token of {:?} must be visible ASCII without spaces",
                    entry.name
                ));
            }
            if tokens.iter().any(|(other, _)| other.expose() == token) {
                return Err(format!("{:?} reuses another entry's token", entry.name));
            }
            for pattern in [&entry.publish, &entry.subscribe]
                .iter()
                .flat_map(|r| r.allow.iter().chain(r.deny.iter()))
            {
                if tokens_of(pattern).is_none() {
                    return Err(format!(
                        "{:?}: {pattern:?} is not a NATS subject pattern",
                        entry.name
                    ));
                }
            }
            tokens.push((
                SecretString::new(entry.token),
                Arc::new(Grant {
                    name: entry.name,
                    publish: entry.publish,
                    subscribe: entry.subscribe,
                    admin: entry.admin,
                }),
            ));
        }
        Ok(Permissions { tokens })
    }

    /// The grant of `presented` (the bearer token), compared in constant time per entry.
    pub(crate) fn grant_for(&self, presented: &[u8]) -> Option<Arc<Grant>> {
        let mut found = None;
        for (token, grant) in &self.tokens {
            // Every entry is compared, so timing does not tell which one matched.
            if bool::from(token.expose().as_bytes().ct_eq(presented)) {
                found = Some(Arc::clone(grant));
            }
        }
        found
    }
}

impl Grant {
    /// What a broker without a permissions file allows every caller: all but system
    /// subjects, and stream administration.
    pub(crate) fn everything() -> Self {
        let all = SubjectRules {
            allow: vec![">".into()],
            deny: Vec::new(),
        };
        Grant {
            name: "any caller".into(),
            publish: all.clone(),
            subscribe: all,
            admin: true,
        }
    }

    /// PERMISSION_DENIED unless this caller may publish to `subject`; INVALID_ARGUMENT for a
    /// subject that is no publishable subject at all, whoever asks.
    pub(crate) fn check_publish(&self, subject: &str) -> Result<(), Status> {
        let tokens = match tokens_of(subject) {
            None => return Err(malformed(subject)),
            Some(tokens) if tokens.iter().any(|t| is_wildcard(t)) => {
                return Err(Status::invalid_argument(format!(
                    "subject {subject:?} contains a wildcard; publish to a concrete subject"
                )));
            }
            Some(tokens) => tokens,
        };
        if self.publish.admits(&tokens, Access::Publish) {
            Ok(())
        } else {
            Err(self.refuse("publish to", subject))
        }
    }

    /// PERMISSION_DENIED unless this caller may read every subject `filter` matches.
    pub(crate) fn check_subscribe(&self, filter: &str) -> Result<(), Status> {
        let Some(tokens) = tokens_of(filter) else {
            return Err(malformed(filter));
        };
        if self.subscribe.admits(&tokens, Access::Subscribe) {
            Ok(())
        } else {
            Err(self.refuse("read", filter))
        }
    }

    /// PERMISSION_DENIED unless this caller may manage streams (`what`: "delete stream X").
    pub(crate) fn check_admin(&self, what: &str) -> Result<(), Status> {
        if self.admin {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{} may not {what}: stream administration needs an admin token",
                self.name
            )))
        }
    }

    fn refuse(&self, doing: &str, subject: &str) -> Status {
        Status::permission_denied(format!("{} may not {doing} subject {subject:?}", self.name))
    }
}

fn malformed(subject: &str) -> Status {
    Status::invalid_argument(format!(
        "subject {subject:?} is not a NATS subject: empty tokens, whitespace or misplaced \
         wildcards"
    ))
}

/// How a subject is used: published to (a literal subject) or read (maybe a wildcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Publish,
    Subscribe,
}

impl SubjectRules {
    /// Whether the rules admit `subject`, the tokens of a well-formed subject (or filter).
    fn admits(&self, subject: &[&str], access: Access) -> bool {
        if access == Access::Publish && subject.iter().any(|t| is_wildcard(t)) {
            return false;
        }
        let allowed = self
            .allow
            .iter()
            .filter_map(|p| tokens_of(p))
            .any(|pattern| covers(&pattern, subject));
        // A deny pattern that could match any subject of the request wins.
        let denied = self
            .deny
            .iter()
            .filter_map(|p| tokens_of(p))
            .any(|pattern| intersects(&pattern, subject));
        allowed && !denied
    }
}

/// The tokens of a well-formed subject or pattern: non-empty, no whitespace or control
/// characters, no empty token, `>` only last, wildcards only as whole tokens.
fn tokens_of(subject: &str) -> Option<Vec<&str>> {
    if subject.is_empty() || subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        let bad = token.is_empty()
            || (*token == ">" && i + 1 != tokens.len())
            || (token.len() > 1 && token.contains(['*', '>']));
        if bad {
            return None;
        }
    }
    Some(tokens)
}

fn is_wildcard(token: &str) -> bool {
    token == "*" || token == ">"
}

fn is_system(token: &str) -> bool {
    token.starts_with('$')
}

/// True when every subject `subject` matches is matched by `pattern`.
fn covers(pattern: &[&str], subject: &[&str]) -> bool {
    for (i, p) in pattern.iter().enumerate() {
        let Some(s) = subject.get(i) else {
            return false;
        };
        // A first-token wildcard does not reach system subjects.
        if i == 0 && is_wildcard(p) && is_system(s) {
            return false;
        }
        match *p {
            ">" => return true,
            "*" if *s != ">" => {}
            literal if literal == *s => {}
            _ => return false,
        }
    }
    pattern.len() == subject.len()
}

/// True when some subject is matched by both `pattern` and `subject`.
fn intersects(pattern: &[&str], subject: &[&str]) -> bool {
    for (i, p) in pattern.iter().enumerate() {
        let Some(s) = subject.get(i) else {
            return false;
        };
        if *p == ">" || *s == ">" {
            return true;
        }
        if *p != "*" && *s != "*" && p != s {
            return false;
        }
    }
    pattern.len() == subject.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders_only() -> Grant {
        Grant {
            name: "orders-service".into(),
            publish: SubjectRules {
                allow: vec!["orders.>".into()],
                deny: vec!["orders.internal.>".into()],
            },
            subscribe: SubjectRules {
                allow: vec!["orders.>".into()],
                deny: vec![],
            },
            admin: false,
        }
    }

    #[test]
    fn a_token_for_orders_cannot_reach_payments_by_any_spelling() {
        let grant = orders_only();
        assert!(grant.check_publish("orders.created").is_ok());
        assert!(grant.check_publish("orders.eu.created").is_ok());
        for subject in [
            "payments.x",
            "orders",
            "orders.internal.audit",
            "$JS.API.STREAM.DELETE.ORDERS",
        ] {
            let refused = grant.check_publish(subject).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{subject:?}");
            assert!(refused.message().contains("orders-service"));
        }
        // No subject to publish to at all: bad input, whoever sends it.
        for subject in [
            "orders.*",
            "orders.>",
            ">",
            "*.x",
            "$JS.API.>",
            "orders..x",
            ".orders.x",
            "orders.x.",
            "orders.x payments.x",
            " orders.x",
            "orders.x\n",
            "orders\t.x",
            "",
        ] {
            let refused = grant.check_publish(subject).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{subject:?}");
        }
        assert!(grant.check_subscribe("orders.>").is_ok());
        assert!(grant.check_subscribe("orders.*.created").is_ok());
        assert!(grant.check_subscribe("orders.created").is_ok());
        for filter in [
            "payments.x",
            ">",
            "*.x",
            "*.>",
            "orders",
            "orders..x",
            "$JS.API.>",
            "orders.x payments.x",
        ] {
            assert!(grant.check_subscribe(filter).is_err(), "{filter:?}");
        }
        assert!(grant.check_admin("delete stream ORDERS").is_err());
    }

    #[test]
    fn deny_patterns_win_over_wildcard_subscriptions() {
        let mut grant = orders_only();
        grant.subscribe.deny = vec!["orders.secret".into()];
        assert!(grant.check_subscribe("orders.public").is_ok());
        for filter in ["orders.>", "orders.*", "orders.secret"] {
            assert!(grant.check_subscribe(filter).is_err(), "{filter:?}");
        }
    }

    #[test]
    fn the_all_access_grant_keeps_system_subjects_out() {
        let grant = Grant::everything();
        assert!(grant.check_publish("anything.at.all").is_ok());
        assert!(grant.check_subscribe(">").is_ok());
        assert!(grant.check_admin("create stream X").is_ok());
        for subject in ["$JS.API.STREAM.DELETE.X", "$SYS.REQ.SERVER.PING", "$KV.b.k"] {
            assert!(grant.check_publish(subject).is_err(), "{subject}");
        }
        let mut explicit = grant.clone();
        explicit.publish.allow.push("$KV.>".into());
        assert!(explicit.check_publish("$KV.b.k").is_ok());
    }

    #[test]
    fn files_name_tokens_and_refuse_bad_ones() {
        let permissions = Permissions::from_json(
            r#"{"tokens": [
                {"name": "a", "token": "tok-a", "publish": {"allow": ["a.>"]}},
                {"name": "ops", "token": "tok-ops", "admin": true}
            ]}"#,
        )
        .unwrap();
        let a = permissions.grant_for(b"tok-a").unwrap();
        assert!(a.check_publish("a.b").is_ok());
        assert!(a.check_subscribe("a.b").is_err(), "nothing granted to read");
        assert!(permissions.grant_for(b"tok-ops").unwrap().admin);
        assert!(permissions.grant_for(b"tok").is_none());
        assert!(!format!("{permissions:?}").contains("tok-a"));
        for bad in [
            r#"{"tokens": []}"#,
            r#"{"tokens": [{"name": "a", "token": ""}]}"#,
            r#"{"tokens": [{"name": "a", "token": "x y"}]}"#,
            r#"{"tokens": [{"name": "a", "token": "t"}, {"name": "b", "token": "t"}]}"#,
            r#"{"tokens": [{"name": "a", "token": "t", "publish": {"allow": ["a..b"]}}]}"#,
            r#"{"tokens": [{"name": "a", "token": "t", "publish": {"allow": ["a.>.b"]}}]}"#,
            r#"{"tokens": [{"name": "a", "token": "t", "publish": {"alow": ["a"]}}]}"#,
        ] {
            assert!(Permissions::from_json(bad).is_err(), "{bad}");
        }
    }
}
