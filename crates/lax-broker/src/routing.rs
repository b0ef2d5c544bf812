//! Which stream a publish goes to: subject → stream lookups (cached), auto-creation, and the
//! tier check that refuses a stream weaker than the tier asked for.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    ErrorCode,
    stream::{Config, StorageType},
};
use lax_core::Tier;
use tonic::Code;

use crate::{
    error::{PublishFailure, publish_failure_for_api},
    jsapi::JsApi,
};

/// Cached lookups past this many are dropped wholesale (after expired ones), so a flood of
/// distinct subjects cannot grow the cache without bound.
const MAX_CACHED_SUBJECTS: usize = 100_000;

/// What a publish needs to know of the stream capturing its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamTarget {
    pub(crate) name: String,
    pub(crate) storage: StorageType,
    pub(crate) replicas: usize,
}

impl StreamTarget {
    pub(crate) fn of(config: &Config) -> Self {
        StreamTarget {
            name: config.name.clone(),
            storage: config.storage,
            replicas: config.num_replicas.max(1),
        }
    }

    /// Why this stream is too weak for `tier`, or `None` when it is strong enough (a stronger
    /// stream than asked for is fine).
    pub(crate) fn weakness_for(&self, tier: Tier, replicated_replicas: usize) -> Option<String> {
        let needs_file = tier != Tier::Memory;
        let needed_replicas = if tier == Tier::Replicated {
            replicated_replicas
        } else {
            1
        };
        if needs_file && self.storage == StorageType::Memory {
            return Some(format!(
                "stream {} keeps messages in memory, but tier {tier} needs file storage",
                self.name
            ));
        }
        if self.replicas < needed_replicas {
            return Some(format!(
                "stream {} has {} replica{}, but tier {tier} needs {needed_replicas}",
                self.name,
                self.replicas,
                if self.replicas == 1 { "" } else { "s" }
            ));
        }
        None
    }
}

/// Storage and replicas a tier asks for.
pub(crate) fn tier_storage(tier: Tier, replicated_replicas: usize) -> (StorageType, usize) {
    match tier {
        Tier::Memory => (StorageType::Memory, 1),
        Tier::Persistent => (StorageType::File, 1),
        Tier::Replicated => (StorageType::File, replicated_replicas),
    }
}

/// The strongest tier a stream's storage and replicas describe (`replicated` needs more than
/// one replica and at least the configured replicated count).
pub(crate) fn tier_of(storage: StorageType, replicas: usize, replicated_replicas: usize) -> Tier {
    match storage {
        StorageType::Memory => Tier::Memory,
        StorageType::File if replicas > 1 && replicas >= replicated_replicas => Tier::Replicated,
        StorageType::File => Tier::Persistent,
    }
}

/// The stream the broker creates for a subject nothing captures: named after the first
/// token, upper-cased (`orders.created` → `ORDERS`), capturing `orders.>` (or just `orders`
/// for a one-token subject).
pub(crate) fn auto_stream_config(subject: &str, tier: Tier, replicated_replicas: usize) -> Config {
    let (first, rest) = subject
        .split_once('.')
        .map_or((subject, false), |(f, _)| (f, true));
    let name: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let (storage, num_replicas) = tier_storage(tier, replicated_replicas);
    Config {
        name,
        subjects: vec![if rest {
            format!("{first}.>")
        } else {
            first.to_owned()
        }],
        storage,
        num_replicas,
        description: Some(format!("created by the LAX broker for tier {tier}")),
        ..Default::default()
    }
}

/// Subject → stream resolution with a cache.
#[derive(Debug)]
pub(crate) struct StreamRouter {
    api: JsApi,
    cache: Mutex<HashMap<String, (StreamTarget, Instant)>>,
    ttl: Duration,
    auto_create: bool,
    replicated_replicas: usize,
}

impl StreamRouter {
    pub(crate) fn new(
        api: JsApi,
        ttl: Duration,
        auto_create: bool,
        replicated_replicas: usize,
    ) -> Self {
        StreamRouter {
            api,
            cache: Mutex::new(HashMap::new()),
            ttl,
            auto_create,
            replicated_replicas,
        }
    }

    pub(crate) fn replicated_replicas(&self) -> usize {
        self.replicated_replicas
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (StreamTarget, Instant)>> {
        // The map holds no invariant a panicking holder could break, so a poisoned lock is
        // still usable.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stream `subject` was last resolved to, if that is still remembered.
    pub(crate) fn known_stream(&self, subject: &str) -> Option<String> {
        self.cached(subject).map(|target| target.name)
    }

    fn cached(&self, subject: &str) -> Option<StreamTarget> {
        let cache = self.cache();
        let (target, at) = cache.get(subject)?;
        (at.elapsed() < self.ttl).then(|| target.clone())
    }

    fn remember(&self, subject: &str, target: &StreamTarget) {
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED_SUBJECTS {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED_SUBJECTS {
                cache.clear();
            }
        }
        cache.insert(subject.to_owned(), (target.clone(), Instant::now()));
    }

    /// Forgets the lookup of one subject (its publish found no stream).
    pub(crate) fn forget_subject(&self, subject: &str) {
        self.cache().remove(subject);
    }

    /// Forgets every lookup that led to `stream` (it was updated or deleted).
    pub(crate) fn forget_stream(&self, stream: &str) {
        self.cache().retain(|_, (target, _)| target.name != stream);
    }

    /// The stream capturing `subject`, creating one for `tier` when none does and
    /// auto-creation is on.
    pub(crate) async fn resolve(
        &self,
        subject: &str,
        tier: Tier,
    ) -> Result<StreamTarget, PublishFailure> {
        if let Some(target) = self.cached(subject) {
            return Ok(target);
        }
        let target = match self.lookup(subject).await? {
            Some(target) => target,
            None if self.auto_create => self.create_for(subject, tier).await?,
            None => {
                return Err(PublishFailure::new(
                    Code::NotFound,
                    format!(
                        "no stream captures subject {subject:?} and the broker does not create \
                         streams (auto-creation is off); create one with StreamManager.CreateStream"
                    ),
                ));
            }
        };
        self.remember(subject, &target);
        Ok(target)
    }

    /// The stream capturing `subject`, if any. A stream JetStream lists as missing (its
    /// leader did not answer: an election) is a transient failure, never "no stream" — that
    /// would auto-create a rival or refuse the publish.
    async fn lookup(&self, subject: &str) -> Result<Option<StreamTarget>, PublishFailure> {
        let page = self.api.stream_page(0, Some(subject)).await.map_err(|e| {
            publish_failure_for_api(&format!("looking up the stream for {subject:?}"), &e)
        })?;
        if let Some(info) = page.streams.unwrap_or_default().first() {
            return Ok(Some(StreamTarget::of(&info.config)));
        }
        match page.missing.unwrap_or_default().as_slice() {
            [] => Ok(None),
            missing => Err(PublishFailure::transient(format!(
                "stream(s) {} did not answer the lookup for {subject:?} (a leader election?)",
                missing.join(", ")
            ))),
        }
    }

    /// After "no responders" on a publish to `target`: a transient failure while JetStream
    /// still assigns the stream to the subject (it has no leader: an election is under way),
    /// `None` when the stream is really gone, its lookup forgotten so the next resolve looks
    /// again.
    pub(crate) async fn no_leader_or_gone(
        &self,
        subject: &str,
        target: &StreamTarget,
    ) -> Option<PublishFailure> {
        match self.api.stream_names(subject).await {
            Ok(names) if names.contains(&target.name) => Some(PublishFailure::transient(format!(
                "stream {} has no leader to store the message (a leader election is under way)",
                target.name
            ))),
            Ok(_) => {
                self.forget_subject(subject);
                None
            }
            Err(e) => Some(publish_failure_for_api(
                &format!(
                    "stream {} did not answer; checking it still exists",
                    target.name
                ),
                &e,
            )),
        }
    }

    async fn create_for(&self, subject: &str, tier: Tier) -> Result<StreamTarget, PublishFailure> {
        let config = auto_stream_config(subject, tier, self.replicated_replicas);
        match self.api.create_stream(&config).await {
            Ok(info) => {
                tracing::info!(stream = %config.name, subjects = ?config.subjects, %tier, "created stream");
                Ok(StreamTarget::of(&info.config))
            }
            // Another publish created it (or a stream of that name exists): look again.
            Err(e)
                if matches!(
                    e.error_code(),
                    Some(ErrorCode::STREAM_NAME_EXIST | ErrorCode::STREAM_SUBJECT_OVERLAP)
                ) =>
            {
                self.lookup(subject).await?.ok_or_else(|| {
                    PublishFailure::precondition(format!(
                        "no stream captures subject {subject:?}, and the stream {} the broker would \
                         create for it cannot be created: {e}",
                        config.name
                    ))
                })
            }
            Err(e) => Err(publish_failure_for_api(
                &format!(
                    "creating stream {} ({} storage, {} replica(s)) for tier {tier}",
                    config.name,
                    storage_name(config.storage),
                    config.num_replicas
                ),
                &e,
            )),
        }
    }
}

pub(crate) fn storage_name(storage: StorageType) -> &'static str {
    match storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(storage: StorageType, replicas: usize) -> StreamTarget {
        StreamTarget {
            name: "S".into(),
            storage,
            replicas,
        }
    }

    #[test]
    fn weaker_streams_are_refused_and_stronger_ones_accepted() {
        let memory = target(StorageType::Memory, 1);
        let file1 = target(StorageType::File, 1);
        let file3 = target(StorageType::File, 3);
        assert!(memory.weakness_for(Tier::Memory, 3).is_none());
        assert!(
            memory
                .weakness_for(Tier::Persistent, 3)
                .unwrap()
                .contains("file storage")
        );
        assert!(file1.weakness_for(Tier::Memory, 3).is_none());
        assert!(file1.weakness_for(Tier::Persistent, 3).is_none());
        let why = file1.weakness_for(Tier::Replicated, 3).unwrap();
        assert!(
            why.contains("stream S has 1 replica, but tier replicated needs 3"),
            "{why}"
        );
        assert!(file1.weakness_for(Tier::Replicated, 1).is_none());
        assert!(file3.weakness_for(Tier::Replicated, 3).is_none());
    }

    #[test]
    fn auto_created_streams_are_named_after_the_first_token() {
        let config = auto_stream_config("orders.created", Tier::Persistent, 3);
        assert_eq!(config.name, "ORDERS");
        assert_eq!(config.subjects, ["orders.>"]);
        assert_eq!(
            (config.storage, config.num_replicas),
            (StorageType::File, 1)
        );
        let config = auto_stream_config("pay-ments", Tier::Replicated, 3);
        assert_eq!(config.name, "PAY-MENTS");
        assert_eq!(config.subjects, ["pay-ments"]);
        assert_eq!(config.num_replicas, 3);
        assert_eq!(auto_stream_config("a$b.c", Tier::Memory, 3).name, "A_B");
        assert_eq!(
            auto_stream_config("x.y", Tier::Memory, 3).storage,
            StorageType::Memory
        );
    }

    #[test]
    fn tiers_are_read_back_from_storage_and_replicas() {
        assert_eq!(tier_of(StorageType::Memory, 3, 3), Tier::Memory);
        assert_eq!(tier_of(StorageType::File, 1, 3), Tier::Persistent);
        assert_eq!(tier_of(StorageType::File, 2, 3), Tier::Persistent);
        assert_eq!(tier_of(StorageType::File, 3, 3), Tier::Replicated);
        assert_eq!(tier_of(StorageType::File, 1, 1), Tier::Persistent);
        assert_eq!(tier_of(StorageType::File, 2, 1), Tier::Replicated);
    }
}
