//! Data-driven compile cases: every directory under `tests/cases/` is compiled as a set of
//! platform files and its diagnostics are compared with a reviewed snapshot.

use crate::support::{render, root, test_env};
use entrepot::compile;

#[test]
fn compile_cases() {
    let cases = root().join("tests/cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 6,
        "expected the compile cases under {}",
        cases.display()
    );
    for dir in dirs {
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let compiled = compile::compile_dir(&dir, &test_env);
        let mut text = render(&compiled.diagnostics);
        text.push_str(&format!(
            "\n-- compiled platforms: {:?}\n",
            compiled.plan.platforms.keys().collect::<Vec<_>>()
        ));
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn five_mistakes_are_five_located_diagnostics() {
    let dir = root().join("tests/cases/five_mistakes");
    let compiled = compile::compile_dir(&dir, &test_env);
    let codes: Vec<&str> = compiled
        .diagnostics
        .iter()
        .map(|d| d.code.as_str())
        .collect();
    // Each kind of mistake written into the file is reported, in one run.
    for expected in [
        "E_UNKNOWN_KEY",
        "E_UNKNOWN_HELPER",
        "E_JSONPATH",
        "E_UNKNOWN_OPERATION",
        "E_UNDECLARED_CREDENTIAL",
        "E_UNDECLARED_SETTING",
        "E_UNKNOWN_EVENT",
        "E_INVALID_VALUE",
        "E_PLATFORM_NAME",
    ] {
        assert!(
            codes.contains(&expected),
            "{expected} missing from {codes:?}"
        );
    }
    assert!(
        compiled
            .diagnostics
            .iter()
            .all(|d| d.line > 0 && d.column > 0)
    );
    assert!(compiled.plan.platforms.is_empty());
}

#[test]
fn a_broken_file_does_not_hide_the_others() {
    let dir = root().join("tests/cases/cross_file");
    let compiled = compile::compile_dir(&dir, &test_env);
    // a.yaml is fine and keeps its platform; b.yaml and c.yaml collide with it.
    assert_eq!(
        compiled.plan.platforms.keys().collect::<Vec<_>>(),
        vec!["alpha"]
    );
    assert!(
        compiled
            .diagnostics
            .iter()
            .any(|d| d.code.as_str() == "E_DUPLICATE_PLATFORM")
    );
    assert!(
        compiled
            .diagnostics
            .iter()
            .any(|d| d.code.as_str() == "E_DUPLICATE_CALLBACK_PATH")
    );
}
