//! Reading a YAML file into a JSON value plus an index of where every key and value is, so
//! later stages can point at the exact line and column of a problem.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diagnostics::{Code, Diagnostic, Pos};

/// One segment of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into a document, written `operations.order.create.request` for people and
/// `/operations/order.create/request` (a JSON pointer) for lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DocPath(pub Vec<Seg>);

impl DocPath {
    /// The empty path (the document root).
    pub fn root() -> Self {
        DocPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.into()));
        DocPath(segs)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        DocPath(segs)
    }

    /// The path as a JSON pointer.
    pub fn pointer(&self) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            out.push('/');
            match seg {
                Seg::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Seg::Index(i) => {
                    let _ = write!(out, "{i}");
                }
            }
        }
        out
    }

    /// Parses a JSON pointer; numeric segments become indexes.
    pub fn from_pointer(pointer: &str) -> Self {
        DocPath(
            pointer
                .split('/')
                .skip(1)
                .map(|s| match s.parse::<usize>() {
                    Ok(i) if !s.starts_with('+') => Seg::Index(i),
                    _ => Seg::Key(s.replace("~1", "/").replace("~0", "~")),
                })
                .collect(),
        )
    }

    /// The path for people: `callbacks[0].verify.steps[2].key`.
    pub fn dotted(&self) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    /// The path without its last segment.
    pub fn parent(&self) -> Option<DocPath> {
        let (_, rest) = self.0.split_last()?;
        Some(DocPath(rest.to_vec()))
    }
}

/// Where each key and value of a document starts.
#[derive(Debug, Clone, Default)]
pub struct PosIndex {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

impl PosIndex {
    /// Where the value at `path` starts, or its nearest existing ancestor when it is absent.
    pub fn value(&self, path: &DocPath) -> Pos {
        let mut path = path.clone();
        loop {
            if let Some(pos) = self.values.get(&path.pointer()) {
                return *pos;
            }
            match path.parent() {
                Some(parent) => path = parent,
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    /// Where the key of the entry at `path` is written (falls back to the value's position).
    pub fn key(&self, path: &DocPath) -> Pos {
        self.keys
            .get(&path.pointer())
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

/// A YAML document read from a file.
#[derive(Debug, Clone)]
pub struct SourceDoc {
    /// The file it came from.
    pub file: PathBuf,
    /// The file's text.
    pub text: String,
    /// The document as JSON.
    pub value: serde_json::Value,
    /// Positions of its keys and values.
    pub index: PosIndex,
}

impl SourceDoc {
    /// A diagnostic located at the value at `path`.
    pub fn at(&self, path: &DocPath, code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(
            code,
            &self.file,
            self.index.value(path),
            path.dotted(),
            message.into(),
        )
    }

    /// A diagnostic located at the key of the entry at `path`.
    pub fn at_key(&self, path: &DocPath, code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(
            code,
            &self.file,
            self.index.key(path),
            path.dotted(),
            message.into(),
        )
    }
}

/// Reads and parses a YAML file.
pub fn read(file: &Path) -> Result<SourceDoc, Diagnostic> {
    parse(file, read_text(file)?)
}

/// Reads a file's text, without parsing it.
pub fn read_text(file: &Path) -> Result<String, Diagnostic> {
    std::fs::read_to_string(file).map_err(|e| {
        Diagnostic::error(
            Code::Io,
            file,
            Pos::default(),
            String::new(),
            format!("cannot read the file: {e}"),
        )
    })
}

/// Parses YAML text that came from `file`.
pub fn parse(file: &Path, text: String) -> Result<SourceDoc, Diagnostic> {
    let value: serde_json::Value = match serde_yaml_ng::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or_default();
            let message = e.to_string();
            // serde_yaml_ng appends " at line L column C"; the location is already in front.
            let message = match message.find(" at line ") {
                Some(cut) => message.get(..cut).unwrap_or(&message).to_string(),
                None => message,
            };
            return Err(Diagnostic::error(
                Code::YamlSyntax,
                file,
                pos,
                String::new(),
                format!("the file is not valid YAML: {message}"),
            )
            .with_hint("check the indentation and quoting around this line"));
        }
    };
    let index = index_positions(&text);
    Ok(SourceDoc {
        file: file.to_path_buf(),
        text,
        value,
        index,
    })
}

enum Frame {
    Map { path: DocPath, key: Option<String> },
    Seq { path: DocPath, next: usize },
}

#[derive(Default)]
struct Indexer {
    stack: Vec<Frame>,
    index: PosIndex,
    done: bool,
}

impl Indexer {
    /// The path of the node starting now, or `None` when the node is a mapping key.
    fn place(&mut self, mark: Marker, scalar: Option<&str>) -> Option<DocPath> {
        let pos = Pos {
            line: mark.line(),
            column: mark.col() + 1,
        };
        let path = match self.stack.last_mut() {
            None => DocPath::root(),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                p
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => path.key(k),
                None => {
                    // This node is a key.
                    let k = scalar.unwrap_or("").to_string();
                    self.index.keys.insert(path.key(k.clone()).pointer(), pos);
                    *key = Some(k);
                    return None;
                }
            },
        };
        self.index.values.insert(path.pointer(), pos);
        Some(path)
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            Event::Scalar(text, ..) => {
                self.place(mark, Some(&text));
            }
            Event::Alias(_) => {
                self.place(mark, None);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.place(mark, None) {
                    self.stack.push(Frame::Map { path, key: None });
                } else {
                    // A complex key: index nothing beneath it.
                    self.stack.push(Frame::Map {
                        path: DocPath::root().key("?"),
                        key: None,
                    });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.place(mark, None) {
                    self.stack.push(Frame::Seq { path, next: 0 });
                } else {
                    self.stack.push(Frame::Seq {
                        path: DocPath::root().key("?"),
                        next: 0,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

/// Records where every key and value of the first document in `text` starts.
fn index_positions(text: &str) -> PosIndex {
    let mut indexer = Indexer::default();
    let mut parser = Parser::new_from_str(text);
    // Syntax errors were already reported by the main parser; a partial index is still useful.
    let _ = parser.load(&mut indexer, false);
    indexer.index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_exact() {
        let text = "platform: demo\noperations:\n  order.create:\n    request:\n      form: { a: \"{{x}}\" }\nlist:\n  - one\n  - two: 2\n";
        let doc = parse(Path::new("t.yaml"), text.to_string()).unwrap();
        let ops = DocPath::root().key("operations").key("order.create");
        assert_eq!(doc.index.key(&ops), Pos { line: 3, column: 3 });
        let a = ops.key("request").key("form").key("a");
        assert_eq!(
            doc.index.value(&a),
            Pos {
                line: 5,
                column: 18
            }
        );
        assert_eq!(
            doc.index.key(&a),
            Pos {
                line: 5,
                column: 15
            }
        );
        let two = DocPath::root().key("list").index(1).key("two");
        assert_eq!(
            doc.index.value(&two),
            Pos {
                line: 8,
                column: 10
            }
        );
        // Absent paths fall back to the nearest ancestor.
        assert_eq!(
            doc.index.value(&a.key("missing")),
            Pos {
                line: 5,
                column: 18
            }
        );
    }

    #[test]
    fn pointer_round_trip() {
        let p = DocPath::root().key("a/b").key("c~d").index(3);
        assert_eq!(p.pointer(), "/a~1b/c~0d/3");
        assert_eq!(DocPath::from_pointer(&p.pointer()), p);
        assert_eq!(p.dotted(), "a/b.c~d[3]");
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse(Path::new("bad.yaml"), "a: [1, 2\nb: 3\n".into()).unwrap_err();
        assert_eq!(err.code, Code::YamlSyntax);
        assert!(err.line >= 1, "{err}");
    }
}
