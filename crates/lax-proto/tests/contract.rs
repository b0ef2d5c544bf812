//! Checks the compiled `broker.v1` descriptors against the project's wire contract,
//! `proto/CONTRACT.md`: every message, field number, field name, field type and label, every
//! service and method with its streaming flags, the file each message and service lives in,
//! the package, the syntax and the imports.
//!
//! The contract may only grow: new fields (with new numbers), messages, methods and imports
//! are allowed; anything the contract lists must stay exactly as listed.
//!
//! When `LAX_WIRE_REFERENCE` names a reference copy of the contract written in the same
//! layout (`cargo xtask test` sets it when the team's reference file is present),
//! `the_contract_matches_the_reference_copy` also checks that `proto/CONTRACT.md` states
//! exactly the same facts; without it that check says it was skipped and passes, so a plain
//! clone stands alone.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use prost::Message as _;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

/// Where the contract lives: `<workspace>/proto/CONTRACT.md`.
fn contract_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/CONTRACT.md")
}

/// The environment variable naming an optional reference copy of the contract.
const REFERENCE_ENV: &str = "LAX_WIRE_REFERENCE";

// ---------------------------------------------------------------------------------------
// The contract, as parsed from the markdown.

#[derive(Debug, Default, PartialEq)]
struct Contract {
    package: Option<String>,
    syntax: Option<String>,
    /// file name (`broker.proto`) → what the contract says about it.
    files: BTreeMap<String, ContractFile>,
}

#[derive(Debug, Default, PartialEq)]
struct ContractFile {
    imports: Vec<String>,
    /// message name → fields in table order.
    messages: BTreeMap<String, Vec<ContractField>>,
    services: BTreeMap<String, Vec<ContractMethod>>,
}

#[derive(Debug, Clone, PartialEq)]
struct ContractField {
    number: i32,
    name: String,
    /// The type cell without its explanation, e.g. `string`, `repeated Stream`,
    /// `map<string, string>`, `google.protobuf.Timestamp`.
    ty: String,
}

#[derive(Debug, Clone, PartialEq)]
struct ContractMethod {
    name: String,
    input: String,
    client_streaming: bool,
    output: String,
    server_streaming: bool,
}

/// Backticked spans of a line, in order.
fn backticked(line: &str) -> Vec<String> {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

fn parse_contract(text: &str) -> Contract {
    let mut contract = Contract::default();
    let mut section: Option<String> = None;
    let mut current_message: Option<String> = None;
    let mut in_code = false;
    let mut current_service: Option<String> = None;

    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("line {}: {raw:?}", lineno + 1);

        if line.starts_with("```") {
            in_code = !in_code;
            current_service = None;
            continue;
        }
        if in_code {
            let Some(file) = &section else { continue };
            if let Some(rest) = line.strip_prefix("service ") {
                let name = rest.trim_end_matches('{').trim().to_owned();
                contract
                    .files
                    .entry(file.clone())
                    .or_default()
                    .services
                    .insert(name.clone(), Vec::new());
                current_service = Some(name);
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let service = current_service
                    .as_ref()
                    .unwrap_or_else(|| panic!("rpc outside a service at {}", at()));
                let method =
                    parse_rpc(rest).unwrap_or_else(|| panic!("unparsable rpc at {}", at()));
                contract
                    .files
                    .get_mut(file)
                    .unwrap()
                    .services
                    .get_mut(service)
                    .unwrap()
                    .push(method);
            }
            continue;
        }

        if let Some(heading) = line.strip_prefix("## ") {
            let heading = heading.trim();
            section = heading.ends_with(".proto").then(|| heading.to_owned());
            if let Some(file) = &section {
                contract.files.entry(file.clone()).or_default();
            }
            current_message = None;
            continue;
        }

        // Preamble facts: package, syntax, imports.
        if section.is_none() {
            for span in backticked(line) {
                if let Some(p) = span.strip_prefix("package ") {
                    contract.package = Some(p.trim_end_matches(';').trim().to_owned());
                }
                if let Some(s) = span.strip_prefix("syntax = ") {
                    contract.syntax = Some(s.trim_matches('"').to_owned());
                }
            }
            // "`broker.proto` imports `a.proto` and `b.proto`;"
            for clause in line.split(';') {
                let spans = backticked(clause);
                if clause.contains("` imports `") && spans.len() >= 2 {
                    contract
                        .files
                        .entry(spans[0].clone())
                        .or_default()
                        .imports
                        .extend(spans[1..].iter().cloned());
                }
            }
            continue;
        }

        // Tables inside a file section.
        let Some(file) = &section else { continue };
        if !line.starts_with('|') {
            current_message = None;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 4 {
            panic!("expected 4 table cells at {}", at());
        }
        if cells[0] == "message"
            || cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue; // header or separator
        }
        let message = if cells[0].is_empty() {
            current_message
                .clone()
                .unwrap_or_else(|| panic!("continuation row without a message at {}", at()))
        } else {
            cells[0].to_owned()
        };
        current_message = Some(message.clone());
        let number: i32 = cells[1]
            .parse()
            .unwrap_or_else(|_| panic!("bad field number at {}", at()));
        // "string (`"memory"`, ...)" → "string"
        let ty = cells[3].split(" (").next().unwrap().trim().to_owned();
        assert!(
            !cells[2].is_empty() && !ty.is_empty(),
            "empty cell at {}",
            at()
        );
        contract
            .files
            .get_mut(file)
            .unwrap()
            .messages
            .entry(message)
            .or_default()
            .push(ContractField {
                number,
                name: cells[2].to_owned(),
                ty,
            });
    }
    contract
}

/// `Publish(PublishRequest) returns (PublishResponse);` and the `stream` forms.
fn parse_rpc(rest: &str) -> Option<ContractMethod> {
    let (name, rest) = rest.split_once('(')?;
    let (input, rest) = rest.split_once(')')?;
    let rest = rest
        .trim()
        .strip_prefix("returns")?
        .trim()
        .strip_prefix('(')?;
    let (output, _) = rest.split_once(')')?;
    let streaming = |s: &str| match s.trim().strip_prefix("stream ") {
        Some(t) => (t.trim().to_owned(), true),
        None => (s.trim().to_owned(), false),
    };
    let (input, client_streaming) = streaming(input);
    let (output, server_streaming) = streaming(output);
    Some(ContractMethod {
        name: name.trim().to_owned(),
        input,
        client_streaming,
        output,
        server_streaming,
    })
}

// ---------------------------------------------------------------------------------------
// Checking the compiled descriptors.

fn scalar(ty: &str) -> Option<Type> {
    Some(match ty {
        "string" => Type::String,
        "bytes" => Type::Bytes,
        "bool" => Type::Bool,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "uint32" => Type::Uint32,
        "uint64" => Type::Uint64,
        "sint32" => Type::Sint32,
        "sint64" => Type::Sint64,
        "fixed32" => Type::Fixed32,
        "fixed64" => Type::Fixed64,
        "double" => Type::Double,
        "float" => Type::Float,
        _ => return None,
    })
}

/// The fully-qualified name a contract type refers to: `google.protobuf.Timestamp` stays,
/// `PublishOptions` becomes `.broker.v1.PublishOptions`.
fn qualified(ty: &str, package: &str) -> String {
    if ty.contains('.') {
        format!(".{ty}")
    } else {
        format!(".{package}.{ty}")
    }
}

fn describe(field: &FieldDescriptorProto) -> String {
    let label = match field.label() {
        Label::Repeated => "repeated ",
        _ => "",
    };
    let ty = match field.r#type() {
        Type::Message | Type::Enum => field.type_name().to_owned(),
        other => other
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_lowercase(),
    };
    format!(
        "{label}{ty}{}",
        if field.proto3_optional() {
            " (optional)"
        } else {
            ""
        }
    )
}

/// Checks one value type (the `X` of a field, a `repeated X` or a map's key/value).
fn type_matches(field: &FieldDescriptorProto, ty: &str, package: &str) -> bool {
    match scalar(ty) {
        Some(t) => field.r#type() == t,
        None => field.r#type() == Type::Message && field.type_name() == qualified(ty, package),
    }
}

struct Checker<'a> {
    set: &'a FileDescriptorSet,
    package: String,
    errors: Vec<String>,
    checked_fields: usize,
    checked_methods: usize,
}

impl Checker<'_> {
    fn file(&self, name: &str) -> Option<&FileDescriptorProto> {
        self.set
            .file
            .iter()
            .find(|f| f.name() == name || f.name().ends_with(&format!("/{name}")))
    }

    /// Finds a message (top-level or nested) by its fully-qualified name.
    fn message(&self, fq: &str) -> Option<&DescriptorProto> {
        fn walk<'m>(
            prefix: &str,
            msgs: &'m [DescriptorProto],
            fq: &str,
        ) -> Option<&'m DescriptorProto> {
            for m in msgs {
                let name = format!("{prefix}.{}", m.name());
                if name == fq {
                    return Some(m);
                }
                if let Some(found) = walk(&name, &m.nested_type, fq) {
                    return Some(found);
                }
            }
            None
        }
        self.set
            .file
            .iter()
            .find_map(|f| walk(&format!(".{}", f.package()), &f.message_type, fq))
    }

    fn check_field(&mut self, message: &str, field: &FieldDescriptorProto, want: &ContractField) {
        self.checked_fields += 1;
        let here = format!("{message}.{} = {}", want.name, want.number);
        if field.name() != want.name {
            self.errors.push(format!(
                "{message}: field {} is named `{}`, contract says `{}`",
                want.number,
                field.name(),
                want.name
            ));
        }
        if field.proto3_optional() || field.oneof_index.is_some() {
            self.errors.push(format!(
                "{here}: must be a plain proto3 singular/repeated field (no `optional`, no oneof)"
            ));
        }
        let ty = want.ty.as_str();
        let ok = if let Some(inner) = ty.strip_prefix("map<").and_then(|t| t.strip_suffix('>')) {
            let (key, value) = inner.split_once(',').expect("map<K, V>");
            self.check_map(field, key.trim(), value.trim())
        } else if let Some(elem) = ty.strip_prefix("repeated ") {
            field.label() == Label::Repeated
                && !self.is_map_field(field)
                && type_matches(field, elem.trim(), &self.package)
        } else {
            field.label() == Label::Optional && type_matches(field, ty, &self.package)
        };
        if !ok {
            self.errors.push(format!(
                "{here}: compiled type is `{}`, contract says `{ty}`",
                describe(field)
            ));
        }
    }

    fn is_map_field(&self, field: &FieldDescriptorProto) -> bool {
        field.r#type() == Type::Message
            && self
                .message(field.type_name())
                .is_some_and(|m| m.options.as_ref().is_some_and(|o| o.map_entry()))
    }

    fn check_map(&self, field: &FieldDescriptorProto, key: &str, value: &str) -> bool {
        if field.label() != Label::Repeated || !self.is_map_field(field) {
            return false;
        }
        let entry = self.message(field.type_name()).unwrap();
        let part = |n: i32| entry.field.iter().find(|f| f.number() == n);
        matches!(
            (part(1), part(2)),
            (Some(k), Some(v)) if k.name() == "key" && v.name() == "value"
                && type_matches(k, key, &self.package)
                && type_matches(v, value, &self.package)
        )
    }

    fn check_file(&mut self, file_name: &str, want: &ContractFile, contract: &Contract) {
        let Some(file) = self.file(file_name).cloned() else {
            self.errors.push(format!(
                "{file_name}: not in the compiled descriptor set (files: {:?})",
                self.set.file.iter().map(|f| f.name()).collect::<Vec<_>>()
            ));
            return;
        };
        if let Some(package) = &contract.package
            && file.package() != package
        {
            self.errors.push(format!(
                "{file_name}: package is `{}`, contract says `{package}`",
                file.package()
            ));
        }
        if let Some(syntax) = &contract.syntax
            && file.syntax() != syntax
        {
            self.errors.push(format!(
                "{file_name}: syntax is `{}`, contract says `{syntax}`",
                file.syntax()
            ));
        }
        for import in &want.imports {
            if !file.dependency.iter().any(|d| d == import) {
                self.errors.push(format!(
                    "{file_name}: does not import `{import}` (imports: {:?})",
                    file.dependency
                ));
            }
        }

        for (message, fields) in &want.messages {
            let Some(desc) = file.message_type.iter().find(|m| m.name() == message) else {
                let elsewhere = self
                    .set
                    .file
                    .iter()
                    .find(|f| f.message_type.iter().any(|m| m.name() == message))
                    .map(|f| format!(" (it is in {})", f.name()))
                    .unwrap_or_default();
                self.errors.push(format!(
                    "{file_name}: message {message} is missing{elsewhere}"
                ));
                continue;
            };
            for want_field in fields {
                match desc.field.iter().find(|f| f.number() == want_field.number) {
                    Some(field) => self.check_field(message, field, want_field),
                    None => {
                        let renumbered = desc
                            .field
                            .iter()
                            .find(|f| f.name() == want_field.name)
                            .map(|f| format!(" (`{}` is number {})", f.name(), f.number()))
                            .unwrap_or_default();
                        self.errors.push(format!(
                            "{message}: no field number {} (`{}`){renumbered}",
                            want_field.number, want_field.name
                        ));
                    }
                }
            }
        }

        for (service, methods) in &want.services {
            let Some(desc) = file.service.iter().find(|s| s.name() == service) else {
                self.errors
                    .push(format!("{file_name}: service {service} is missing"));
                continue;
            };
            for want_method in methods {
                self.checked_methods += 1;
                let here = format!("{service}.{}", want_method.name);
                let Some(m) = desc.method.iter().find(|m| m.name() == want_method.name) else {
                    self.errors.push(format!("{here}: method is missing"));
                    continue;
                };
                let input = qualified(&want_method.input, &self.package);
                let output = qualified(&want_method.output, &self.package);
                if m.input_type() != input || m.client_streaming() != want_method.client_streaming {
                    self.errors.push(format!(
                        "{here}: request is `{}{}`, contract says `{}{}`",
                        if m.client_streaming() { "stream " } else { "" },
                        m.input_type(),
                        if want_method.client_streaming {
                            "stream "
                        } else {
                            ""
                        },
                        input
                    ));
                }
                if m.output_type() != output || m.server_streaming() != want_method.server_streaming
                {
                    self.errors.push(format!(
                        "{here}: response is `{}{}`, contract says `{}{}`",
                        if m.server_streaming() { "stream " } else { "" },
                        m.output_type(),
                        if want_method.server_streaming {
                            "stream "
                        } else {
                            ""
                        },
                        output
                    ));
                }
            }
        }
    }
}

#[test]
fn compiled_protos_match_the_wire_contract() {
    let path = contract_path();
    let contract = load_contract(&path);

    // The parser must have understood the document, or the check below proves nothing.
    assert_understood(&contract, &path);

    let set = compiled_set();
    let (errors, fields, methods) = check(&contract, &set);
    let messages: usize = contract.files.values().map(|f| f.messages.len()).sum();
    eprintln!("contract: {messages} messages, {fields} fields, {methods} methods checked");
    assert!(
        errors.is_empty(),
        "the compiled protos break the wire contract ({}):\n  - {}",
        path.display(),
        errors.join("\n  - ")
    );
}

/// The in-repo contract states the same facts as the reference copy, when one is named.
#[test]
fn the_contract_matches_the_reference_copy() {
    let Some(reference) = std::env::var_os(REFERENCE_ENV).filter(|v| !v.is_empty()) else {
        eprintln!(
            "skipped: {REFERENCE_ENV} is not set, so proto/CONTRACT.md is checked against the \
             compiled protos only"
        );
        return;
    };
    let reference = PathBuf::from(reference);
    let want = load_contract(&reference);
    assert_understood(&want, &reference);
    let ours = load_contract(&contract_path());
    assert!(
        ours == want,
        "proto/CONTRACT.md and {} state different facts:\n  ours: {ours:#?}\n  reference: {want:#?}",
        reference.display()
    );
    eprintln!(
        "proto/CONTRACT.md states the same facts as {}",
        reference.display()
    );
}

/// Fails unless the parse found the package, syntax and, for both files, messages,
/// services and imports.
fn assert_understood(contract: &Contract, path: &Path) {
    let at = path.display();
    assert_eq!(
        contract.package.as_deref(),
        Some("broker.v1"),
        "{at}: package line not found"
    );
    assert_eq!(
        contract.syntax.as_deref(),
        Some("proto3"),
        "{at}: syntax line not found"
    );
    for file in ["broker.proto", "streams.proto"] {
        let f = contract
            .files
            .get(file)
            .unwrap_or_else(|| panic!("{at}: no `## {file}` section"));
        assert!(
            !f.messages.is_empty(),
            "{at}: {file}: no message table parsed"
        );
        assert!(
            !f.services.is_empty(),
            "{at}: {file}: no service block parsed"
        );
        assert!(!f.imports.is_empty(), "{at}: {file}: no imports parsed");
    }
}

fn compiled_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(lax_proto::FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

fn load_contract(path: &Path) -> Contract {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the wire contract at {}: {e}", path.display()));
    parse_contract(&text)
}

/// Runs every check; returns the violations and how many fields and methods were checked.
fn check(contract: &Contract, set: &FileDescriptorSet) -> (Vec<String>, usize, usize) {
    let mut checker = Checker {
        set,
        package: contract.package.clone().unwrap_or_default(),
        errors: Vec::new(),
        checked_fields: 0,
        checked_methods: 0,
    };
    for (file, want) in &contract.files {
        checker.check_file(file, want, contract);
    }
    (
        checker.errors,
        checker.checked_fields,
        checker.checked_methods,
    )
}

fn file_mut<'a>(set: &'a mut FileDescriptorSet, name: &str) -> &'a mut FileDescriptorProto {
    set.file
        .iter_mut()
        .find(|f| f.name().ends_with(name))
        .unwrap()
}

fn message_mut<'a>(set: &'a mut FileDescriptorSet, name: &str) -> &'a mut DescriptorProto {
    set.file
        .iter_mut()
        .flat_map(|f| f.message_type.iter_mut())
        .find(|m| m.name() == name)
        .unwrap()
}

fn field_mut<'a>(
    set: &'a mut FileDescriptorSet,
    message: &str,
    field: &str,
) -> &'a mut FieldDescriptorProto {
    message_mut(set, message)
        .field
        .iter_mut()
        .find(|f| f.name() == field)
        .unwrap()
}

/// Breaks the real descriptors in every way the contract forbids, one break each, and
/// checks that each one is reported (without touching the .proto files).
#[test]
fn every_kind_of_break_is_caught() {
    let contract = load_contract(&contract_path());
    type Break = (&'static str, fn(&mut FileDescriptorSet));
    let breaks: Vec<Break> = vec![
        (
            "PublishRequest: no field number 1 (`subject`) (`subject` is number 20)",
            |s| field_mut(s, "PublishRequest", "subject").number = Some(20),
        ),
        (
            "PublishOptions.timeout_ms = 2: compiled type is `int64`, contract says `int32`",
            |s| field_mut(s, "PublishOptions", "timeout_ms").set_type(Type::Int64),
        ),
        (
            "Message: field 1 is named `message_id`, contract says `id`",
            |s| field_mut(s, "Message", "id").name = Some("message_id".into()),
        ),
        ("StreamConfig.tier = 11: must be a plain proto3", |s| {
            field_mut(s, "StreamConfig", "tier").proto3_optional = Some(true)
        }),
        (
            "StreamConfig.subjects = 2: compiled type is `string`, contract says `repeated string`",
            |s| field_mut(s, "StreamConfig", "subjects").set_label(Label::Optional),
        ),
        (
            "Message.headers = 4: compiled type is `repeated .broker.v1.Message.HeadersEntry`, contract says `map<string, string>`",
            |s| {
                let entry = message_mut(s, "Message")
                    .nested_type
                    .iter_mut()
                    .find(|m| m.name() == "HeadersEntry")
                    .unwrap();
                entry.field[1].set_type(Type::Bytes);
            },
        ),
        (
            "StreamStats.subject_stats = 5: compiled type is `repeated .broker.v1.StreamStats.SubjectStatsEntry`, contract says `map<string, uint64>`",
            |s| {
                let entry = &mut message_mut(s, "StreamStats").nested_type[0];
                entry.options.as_mut().unwrap().map_entry = Some(false);
            },
        ),
        (
            "StreamInfo.config = 1: compiled type is `.broker.v1.StreamConfig`, contract says `Stream`",
            |s| {
                field_mut(s, "StreamInfo", "config").type_name =
                    Some(".broker.v1.StreamConfig".into())
            },
        ),
        (
            "Message.timestamp = 5: compiled type is `.google.protobuf.Duration`, contract says `google.protobuf.Timestamp`",
            |s| {
                field_mut(s, "Message", "timestamp").type_name =
                    Some(".google.protobuf.Duration".into())
            },
        ),
        (
            "BrokerService.Subscribe: response is `.broker.v1.Message`, contract says `stream .broker.v1.Message`",
            |s| {
                let svc = &mut file_mut(s, "broker.proto").service[0];
                svc.method
                    .iter_mut()
                    .find(|m| m.name() == "Subscribe")
                    .unwrap()
                    .server_streaming = Some(false);
            },
        ),
        (
            "BrokerService.StreamPublish: request is `.broker.v1.PublishRequest`, contract says `stream .broker.v1.PublishRequest`",
            |s| {
                let svc = &mut file_mut(s, "broker.proto").service[0];
                svc.method
                    .iter_mut()
                    .find(|m| m.name() == "StreamPublish")
                    .unwrap()
                    .client_streaming = Some(false);
            },
        ),
        (
            "StreamManager.CreateStream: response is `.broker.v1.StreamInfo`, contract says `.broker.v1.Stream`",
            |s| {
                let svc = &mut file_mut(s, "streams.proto").service[0];
                svc.method
                    .iter_mut()
                    .find(|m| m.name() == "CreateStream")
                    .unwrap()
                    .output_type = Some(".broker.v1.StreamInfo".into());
            },
        ),
        ("StreamManager.ListStreams: method is missing", |s| {
            file_mut(s, "streams.proto").service[0]
                .method
                .retain(|m| m.name() != "ListStreams")
        }),
        (
            "broker.proto: message ConsumerGroup is missing (it is in broker/v1/streams.proto)",
            |s| {
                let broker = file_mut(s, "broker.proto");
                let i = broker
                    .message_type
                    .iter()
                    .position(|m| m.name() == "ConsumerGroup")
                    .unwrap();
                let moved = broker.message_type.remove(i);
                file_mut(s, "streams.proto").message_type.push(moved);
            },
        ),
        (
            "streams.proto: does not import `google/protobuf/duration.proto`",
            |s| {
                file_mut(s, "streams.proto")
                    .dependency
                    .retain(|d| !d.ends_with("duration.proto"))
            },
        ),
        (
            "broker.proto: package is `broker.v2`, contract says `broker.v1`",
            |s| file_mut(s, "broker.proto").package = Some("broker.v2".into()),
        ),
    ];
    for (expected, apply) in breaks {
        let mut set = compiled_set();
        apply(&mut set);
        let (errors, _, _) = check(&contract, &set);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "expected an error containing {expected:?}, got {errors:#?}"
        );
    }
}

#[test]
fn the_contract_parser_reads_rows_services_and_imports() {
    let text = r#"
Two files, both `syntax = "proto3"`, both `package demo.v1;`:
`a.proto` imports `google/protobuf/timestamp.proto` and `google/protobuf/any.proto`;
`b.proto` imports `google/protobuf/duration.proto`.

## a.proto

| message | # | field | type |
|---|---|---|---|
| Msg | 1 | id | string |
| | 2 | tier | string (`"memory"`, `"persistent"`) |
| | 3 | headers | map<string, uint64> |
| Other | 1 | items | repeated Msg |

```
service S {
  rpc Up(stream Msg) returns (Other);
  rpc Down(Msg) returns (stream Other);
}
```
"#;
    let contract = parse_contract(text);
    assert_eq!(contract.package.as_deref(), Some("demo.v1"));
    assert_eq!(contract.syntax.as_deref(), Some("proto3"));
    let a = &contract.files["a.proto"];
    assert_eq!(
        a.imports,
        [
            "google/protobuf/timestamp.proto",
            "google/protobuf/any.proto"
        ]
    );
    assert_eq!(
        contract.files["b.proto"].imports,
        ["google/protobuf/duration.proto"]
    );
    let msg = &a.messages["Msg"];
    assert_eq!(msg.len(), 3);
    assert_eq!(
        (msg[1].number, msg[1].name.as_str(), msg[1].ty.as_str()),
        (2, "tier", "string")
    );
    assert_eq!(msg[2].ty, "map<string, uint64>");
    assert_eq!(a.messages["Other"][0].ty, "repeated Msg");
    let methods = &a.services["S"];
    assert!(methods[0].client_streaming && !methods[0].server_streaming);
    assert!(!methods[1].client_streaming && methods[1].server_streaming);
    assert_eq!(
        (methods[1].input.as_str(), methods[1].output.as_str()),
        ("Msg", "Other")
    );
}
