//! Bounded fuzzing of configuration compilation: whatever text a platform file or a gateway
//! file holds — the sample file with random damage, or random YAML — reading and compiling it
//! never panics and always ends in either a plan or at least one located diagnostic.

use std::path::Path;

use entrepot::diagnostics::Diagnostic;
use proptest::prelude::*;

use crate::support::root;

fn sample_platform() -> String {
    std::fs::read_to_string(root().join("platforms/yanxuan.yaml")).unwrap()
}

fn sample_gateway() -> String {
    std::fs::read_to_string(root().join("entrepot.yaml")).unwrap()
}

/// Pieces that mean something to YAML, to templates, to JSONPath or to the recipes.
const PIECES: &[&str] = &[
    ":",
    ": ",
    "-",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "\n",
    "\n  ",
    " ",
    "#",
    "&a",
    "*a",
    "!!str ",
    "|",
    ">",
    "{{",
    "}}",
    "{{input.x}}",
    "{{join a ','}}",
    "$",
    "$.",
    "$.a[*]",
    "${env:X}",
    "~",
    "null",
    "true",
    "0",
    "-1",
    "1e99",
    "99999999999999999999",
    "\t",
    "\\",
    "%",
    "?",
    ",",
    "é",
    "💥",
    "\u{0}",
    "<<: *a",
    "---\n",
    "...\n",
    "key: value\n",
    "steps:\n",
    "alg: rsa-sha256",
    "kind: digest",
    "each: ",
    "fields: ",
    "default: null",
    "type: fen",
    "map: {}",
];

/// One change to a text.
#[derive(Debug, Clone)]
enum Mutation {
    /// Removes `len` characters at `at` (both as fractions of the text).
    Delete(f64, f64),
    /// Inserts a piece at `at`.
    Insert(f64, usize),
    /// Replaces the line at `at` with the line at `from`.
    CopyLine(f64, f64),
    /// Removes the line at `at`.
    DropLine(f64),
    /// Changes the indentation of the line at `at` by -4..4 spaces.
    Indent(f64, i8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64, 0.0..0.05f64).prop_map(|(a, l)| Mutation::Delete(a, l)),
        (0.0..1.0f64, 0..PIECES.len()).prop_map(|(a, p)| Mutation::Insert(a, p)),
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, f)| Mutation::CopyLine(a, f)),
        (0.0..1.0f64).prop_map(Mutation::DropLine),
        (0.0..1.0f64, -4i8..4).prop_map(|(a, d)| Mutation::Indent(a, d)),
    ]
}

fn index(len: usize, at: f64) -> usize {
    ((len as f64) * at) as usize
}

fn apply(text: &str, m: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match m {
        Mutation::Delete(at, len) => {
            let start = index(chars.len(), *at).min(chars.len());
            let end = (start + index(chars.len(), *len) + 1).min(chars.len());
            chars[..start].iter().chain(&chars[end..]).collect()
        }
        Mutation::Insert(at, piece) => {
            let i = index(chars.len(), *at).min(chars.len());
            let mut out: String = chars[..i].iter().collect();
            out.push_str(PIECES[*piece]);
            out.extend(&chars[i..]);
            out
        }
        Mutation::CopyLine(at, from) if !lines.is_empty() => {
            let (i, j) = (index(lines.len(), *at), index(lines.len(), *from));
            let i = i.min(lines.len() - 1);
            lines[i] = lines[j.min(lines.len() - 1)].clone();
            lines.join("\n")
        }
        Mutation::DropLine(at) if !lines.is_empty() => {
            let i = index(lines.len(), *at).min(lines.len() - 1);
            lines.remove(i);
            lines.join("\n")
        }
        Mutation::Indent(at, by) if !lines.is_empty() => {
            let i = index(lines.len(), *at).min(lines.len() - 1);
            let line = &lines[i];
            lines[i] = if *by >= 0 {
                format!("{}{line}", " ".repeat(*by as usize))
            } else {
                let strip = line
                    .chars()
                    .take((-*by) as usize)
                    .take_while(|c| *c == ' ')
                    .count();
                line[strip..].to_string()
            };
            lines.join("\n")
        }
        _ => text.to_string(),
    }
}

/// Every diagnostic names the file it was given and a position inside the text (or the
/// whole file, 0:0).
fn assert_located(diagnostics: &[Diagnostic], file: &Path, text: &str) {
    assert!(!diagnostics.is_empty(), "refused without a diagnostic");
    // Lines as YAML counts them: CR, LF and CR LF all end a line.
    let lines = text
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .split('\n')
        .count();
    for d in diagnostics {
        assert_eq!(d.file, file, "{d}");
        assert!(!d.message.is_empty(), "{d:?}");
        assert!(d.line <= lines + 1, "line {} of {lines}: {d}", d.line);
        assert!(d.line > 0 || d.column == 0, "{d}");
    }
}

/// Reads and compiles a platform file's text; a plan or located diagnostics.
fn check_platform(text: String) {
    let file = Path::new("fuzz/platform.yaml");
    let env = |name: &str| (name == "YANXUAN_BASE_URL").then(|| "http://127.0.0.1:9".to_string());
    match entrepot::config::source::parse(file, text.clone()) {
        Err(d) => assert_located(&[d], file, &text),
        Ok(doc) => match entrepot::compile::compile_platform(doc, &env) {
            Ok(_) => {}
            Err(d) => assert_located(&d, file, &text),
        },
    }
    // The same text through the multi-file path (cross-file checks included).
    let doc = entrepot::config::source::parse(file, text.clone());
    if let Ok(doc) = doc {
        let compiled = entrepot::compile::compile_docs(vec![doc], &env);
        if compiled.plan.platforms.is_empty() {
            assert_located(&compiled.diagnostics, file, &text);
        }
    }
}

fn check_gateway(text: String) {
    let file = Path::new("fuzz/entrepot.yaml");
    match entrepot::config::source::parse(file, text.clone()) {
        Err(d) => assert_located(&[d], file, &text),
        Ok(doc) => {
            if let Err(d) =
                entrepot::compile::gateway::compile_gateway(doc, Path::new("fuzz"), &|_| None)
            {
                assert_located(&d, file, &text);
            }
        }
    }
}

/// Random YAML documents: nested maps, lists and scalars with keys from the platform file's
/// vocabulary, so structure checks and meaning checks both get exercised.
fn yaml_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop::sample::select(vec![
        "platform",
        "title",
        "settings",
        "credentials",
        "request",
        "response",
        "operations",
        "product.list",
        "form",
        "url",
        "sign",
        "steps",
        "place",
        "fields",
        "each",
        "path",
        "name",
        "kind",
        "alg",
        "input",
        "key",
        "callbacks",
        "verify",
        "transport",
        "auth",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
        prop::sample::select(PIECES.to_vec()).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn damaged_platform_files_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        let text = mutations.iter().fold(sample_platform(), |t, m| apply(&t, m));
        check_platform(text);
    }

    #[test]
    fn random_yaml_platform_files_never_panic(doc in yaml_value(), platform in "[a-z_]{0,8}") {
        let mut doc = doc;
        if let serde_json::Value::Object(m) = &mut doc {
            m.insert("platform".into(), platform.into());
        }
        check_platform(serde_yaml_ng::to_string(&doc).unwrap());
    }

    #[test]
    fn random_text_never_panics(text in "(?s).{0,200}") {
        check_platform(text.clone());
        check_gateway(text);
    }

    #[test]
    fn damaged_gateway_files_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        let text = mutations.iter().fold(sample_gateway(), |t, m| apply(&t, m));
        check_gateway(text);
    }
}
