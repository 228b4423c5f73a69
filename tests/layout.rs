//! Rules about the repository itself.

use crate::support::{render, root};
use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.ends_with("examples/observability") {
            // Prometheus's and Grafana's own files, checked by tests/observability.rs.
            continue;
        }
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            // Credentials files (the simulator's demo credentials) are data for the gateway,
            // neither platform nor gateway files.
            let name = p.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
            if !name.ends_with("credentials") {
                out.push(p);
            }
        }
    }
}

#[test]
fn every_sample_yaml_validates() {
    let mut files = Vec::new();
    yaml_files(&root().join("platforms"), &mut files);
    yaml_files(&root().join("examples"), &mut files);
    files.push(root().join("entrepot.yaml"));
    assert!(files.len() >= 2, "no sample files found");
    let diagnostics = entrepot::cli::validate_paths(&files);
    assert!(diagnostics.is_empty(), "{}", render(&diagnostics));
}

#[test]
fn every_sample_yaml_names_its_schema() {
    let mut files = Vec::new();
    yaml_files(&root().join("platforms"), &mut files);
    yaml_files(&root().join("examples"), &mut files);
    files.push(root().join("entrepot.yaml"));
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("# yaml-language-server: $schema="),
            "{} does not start with a yaml-language-server $schema line",
            f.display()
        );
        let schema = first.split("$schema=").nth(1).unwrap().trim();
        assert!(
            f.parent().unwrap().join(schema).is_file(),
            "{}: {schema} does not exist",
            f.display()
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Platform behaviour lives in YAML: no platform's name may appear in the runtime's code.
#[test]
fn no_platform_name_in_runtime() {
    let mut names = Vec::new();
    let mut files = Vec::new();
    yaml_files(&root().join("platforms"), &mut files);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("platform:"))
            .map(|n| n.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
            .unwrap_or_else(|| panic!("{} has no platform: line", f.display()));
        names.push(name);
    }
    assert!(!names.is_empty());
    let mut sources = Vec::new();
    rust_files(&root().join("runtime"), &mut sources);
    let mut hits = Vec::new();
    for src in sources {
        let Ok(text) = std::fs::read_to_string(&src) else {
            continue;
        };
        let lower = text.to_ascii_lowercase();
        for name in &names {
            let found = lower.match_indices(name.as_str()).any(|(i, m)| {
                let before = lower[..i].chars().next_back();
                let after = lower[i + m.len()..].chars().next();
                let word =
                    |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                !word(before) && !word(after)
            });
            if found {
                hits.push(format!("{} names platform '{name}'", src.display()));
            }
        }
    }
    assert!(hits.is_empty(), "platform names in runtime/: {hits:?}");
}

/// The recipe cookbook of docs/adding-a-platform.md: every `docs/cookbook/*.yaml` is a platform
/// file that validates with no diagnostic and names its schema.
#[test]
fn every_cookbook_recipe_validates() {
    let mut files = Vec::new();
    yaml_files(&root().join("docs/cookbook"), &mut files);
    assert!(
        files.len() >= 4,
        "docs/cookbook holds {} files",
        files.len()
    );
    let diagnostics = entrepot::cli::validate_paths(&files);
    assert!(diagnostics.is_empty(), "{}", render(&diagnostics));
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../../schemas/platform.schema.json"),
            "{} does not name the platform schema",
            f.display()
        );
    }
}

/// docs/adding-a-platform.md shows excerpts of platform files: every line of its YAML blocks
/// (but those shortened with `…`) is a line of a file a test loads — `platforms/`,
/// `docs/cookbook/` or `tests/vectors/` — so the excerpts cannot drift from files that work.
#[test]
fn adding_a_platform_shows_only_lines_of_checked_files() {
    let mut files = Vec::new();
    yaml_files(&root().join("platforms"), &mut files);
    yaml_files(&root().join("docs/cookbook"), &mut files);
    yaml_files(&root().join("tests/vectors"), &mut files);
    let known: std::collections::HashSet<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .map(|l| l.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let doc = std::fs::read_to_string(root().join("docs/adding-a-platform.md")).unwrap();
    let mut blocks = 0;
    let mut missing = Vec::new();
    for block in doc.split("```yaml\n").skip(1) {
        blocks += 1;
        let block = block.split("```").next().unwrap();
        for line in block.lines().map(str::trim) {
            if !line.is_empty() && !line.contains('…') && !known.contains(line) {
                missing.push(line.to_owned());
            }
        }
    }
    assert!(blocks >= 10, "only {blocks} YAML blocks found");
    assert!(
        missing.is_empty(),
        "lines of docs/adding-a-platform.md in no checked file:\n{}",
        missing.join("\n")
    );
}
