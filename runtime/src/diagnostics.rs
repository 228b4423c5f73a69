//! Compiler-style diagnostics: every problem found in the configuration, located in the file
//! that caused it, with a stable code and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// A stable identifier of a kind of problem; tools may match on its text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Code {
            $($(#[$doc])* #[serde(rename = $text)] $variant,)*
        }
        impl Code {
            /// The code as written in messages, such as `E_UNKNOWN_HELPER`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)* }
            }
        }
    };
}

codes! {
    /// A file could not be read.
    Io => "E_IO",
    /// The YAML itself is malformed.
    YamlSyntax => "E_YAML_SYNTAX",
    /// A key the format does not know.
    UnknownKey => "E_UNKNOWN_KEY",
    /// A value of the wrong type.
    Type => "E_TYPE",
    /// A required key is absent.
    MissingKey => "E_MISSING_KEY",
    /// A value outside the allowed set or shape.
    InvalidValue => "E_INVALID_VALUE",
    /// A platform identifier with forbidden characters.
    PlatformName => "E_PLATFORM_NAME",
    /// Two files declare the same platform.
    DuplicatePlatform => "E_DUPLICATE_PLATFORM",
    /// An operation name that is not a canonical operation.
    UnknownOperation => "E_UNKNOWN_OPERATION",
    /// An event name that is not a canonical event.
    UnknownEvent => "E_UNKNOWN_EVENT",
    /// A template that does not parse.
    TemplateSyntax => "E_TEMPLATE_SYNTAX",
    /// A template calls a helper that does not exist.
    UnknownHelper => "E_UNKNOWN_HELPER",
    /// A template refers to a variable that does not exist where it is used.
    UnknownVariable => "E_UNKNOWN_VARIABLE",
    /// A template refers to a credential the platform does not declare.
    UndeclaredCredential => "E_UNDECLARED_CREDENTIAL",
    /// A template refers to a setting the platform does not declare.
    UndeclaredSetting => "E_UNDECLARED_SETTING",
    /// A JSONPath that does not parse.
    JsonPath => "E_JSONPATH",
    /// A callback path is malformed.
    CallbackPath => "E_CALLBACK_PATH",
    /// Two callbacks share one path.
    DuplicateCallbackPath => "E_DUPLICATE_CALLBACK_PATH",
    /// An `${env:NAME}` reference to an unset variable without a default.
    EnvMissing => "E_ENV_MISSING",
    /// Two options that exclude each other are both set.
    Conflict => "E_CONFLICT",
    /// A duration such as `5m` that does not parse.
    Duration => "E_DURATION",
    /// A time format pattern or UTC offset that does not parse.
    TimeFormat => "E_TIME_FORMAT",
    /// A recipe refers to a step that is not defined before it.
    UnknownStep => "E_UNKNOWN_STEP",
    /// Two recipe steps share a name, or a step takes a reserved name.
    DuplicateStep => "E_DUPLICATE_STEP",
    /// A binary (`encode: raw`) value used inside a larger template.
    BinaryInTemplate => "E_BINARY_IN_TEMPLATE",
    /// A request URL places an input where it could change the URL's shape.
    UrlInput => "E_URL_INPUT",
    /// An algorithm that needs a key has none, or one that takes none has one.
    SigningKey => "E_SIGNING_KEY",
    /// A mapping that is empty or mixes exclusive options.
    Mapping => "E_MAPPING",
    /// A reference that reaches one element of a list at most (a list where one value goes):
    /// the other elements would be lost.
    ArrayAsScalar => "E_ARRAY_AS_SCALAR",
    /// An id entity kind with forbidden characters.
    IdKind => "E_ID_KIND",
    /// An id entity kind used (`id:`, `ids:`, `record`) but not declared under the platform's
    /// `ids:` policies.
    UndeclaredIdKind => "E_UNDECLARED_ID_KIND",
    /// A field the canonical model does not have: an `input.X` reference, an `ids:` path or a
    /// mapped output or event field.
    UnknownField => "E_UNKNOWN_FIELD",
    /// A field the canonical model requires that a mapping leaves out, or may leave out.
    RequiredUnmapped => "E_REQUIRED_UNMAPPED",
    /// A gateway setting that is malformed.
    Gateway => "E_GATEWAY",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works but something looks wrong.
    Warning,
}

/// One problem, located in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// How serious it is.
    pub severity: Severity,
    /// Stable code.
    pub code: Code,
    /// The file, as given on the command line or found in the platforms directory.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when the problem concerns the whole file.
    pub column: usize,
    /// Dotted path of the value in the YAML document, such as `operations.order.create.request`.
    pub path: String,
    /// What is wrong, naming the value.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error located at `pos` in `file`.
    pub fn error(code: Code, file: &Path, pos: Pos, path: String, message: String) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            path,
            message,
            hint: None,
        }
    }

    /// The same diagnostic with a fix hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {severity}[{}]: ", self.code)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

/// A 1-based position in a file; `0:0` stands for the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance counted in characters, where swapping two neighbours costs one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j] = distance between a[..i] and b[..j]
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        if let Some(first) = row.first_mut() {
            *first = i;
        }
    }
    if let Some(first_row) = rows.first_mut() {
        for (j, cell) in first_row.iter_mut().enumerate() {
            *cell = j;
        }
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let at = |r: &Vec<Vec<usize>>, x: usize, y: usize| {
                r.get(x).and_then(|row| row.get(y)).copied().unwrap_or(0)
            };
            let same = a.get(i - 1) == b.get(j - 1);
            let mut best = (at(&rows, i - 1, j) + 1)
                .min(at(&rows, i, j - 1) + 1)
                .min(at(&rows, i - 1, j - 1) + usize::from(!same));
            if i > 1 && j > 1 && a.get(i - 1) == b.get(j - 2) && a.get(i - 2) == b.get(j - 1) {
                best = best.min(at(&rows, i - 2, j - 2) + 1);
            }
            if let Some(cell) = rows.get_mut(i).and_then(|row| row.get_mut(j)) {
                *cell = best;
            }
        }
    }
    rows.get(a.len())
        .and_then(|row| row.get(b.len()))
        .copied()
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let helpers = ["join", "json", "now", "urlencode"];
        assert_eq!(did_you_mean("jion", helpers), Some("join"));
        assert_eq!(did_you_mean("urlencod", helpers), Some("urlencode"));
        assert_eq!(did_you_mean("totally", helpers), None);
    }

    #[test]
    fn edit_distance_counts_by_hand() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn display_is_compiler_like() {
        let d = Diagnostic::error(
            Code::UnknownHelper,
            Path::new("platforms/x.yaml"),
            Pos {
                line: 14,
                column: 7,
            },
            "operations.order.create.request.form.skuIds".into(),
            "unknown template helper 'jion'".into(),
        )
        .with_hint("did you mean 'join'?");
        assert_eq!(
            d.to_string(),
            "platforms/x.yaml:14:7: error[E_UNKNOWN_HELPER]: operations.order.create.request.form.skuIds: unknown template helper 'jion'\n  help: did you mean 'join'?"
        );
    }
}
