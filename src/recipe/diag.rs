//! Diagnostics: what is wrong with a recipe, where (file:line:col and the source line), and how
//! to fix it. Every check collects them; they are rendered together.

use std::fmt;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

/// A text a diagnostic can point into: a recipe file, or a `--set` argument.
#[derive(Debug, Clone)]
pub struct Source {
    /// How the source is named to the user (a path as given, `--set`, `environment`).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A span of a source (index into [`Sources`]).
    Span { source: usize, span: Range<usize> },
    /// An environment variable.
    Env(String),
}

/// Every source text a recipe was assembled from.
#[derive(Debug, Clone, Default)]
pub struct Sources(pub Vec<Source>);

impl Sources {
    /// Adds a source and returns its index.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> usize {
        self.0.push(Source {
            name: name.into(),
            text: text.into(),
        });
        self.0.len() - 1
    }

    /// `file:line:col` of an origin.
    pub fn locate(&self, origin: &Origin) -> String {
        match origin {
            Origin::Env(var) => format!("environment variable `{var}`"),
            Origin::Span { source, span } => {
                let s = &self.0[*source];
                let (line, col) = line_col(&s.text, span.start);
                format!("{}:{line}:{col}", s.name)
            }
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// One problem with a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The full sentence: what is wrong, with the key in backticks.
    pub message: String,
    /// Where it is, when known.
    pub origin: Option<Origin>,
    /// How to fix it, when there is more to say than the message.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            origin: None,
            help: None,
        }
    }

    /// Points the diagnostic at an origin.
    pub fn at(mut self, origin: Option<Origin>) -> Self {
        self.origin = origin;
        self
    }

    /// Adds a help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one recipe, rendered together.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The problems, in the order found.
    pub items: Vec<Diagnostic>,
    /// The texts they point into.
    pub sources: Sources,
}

impl Diagnostics {
    /// Renders every diagnostic, cargo style, without colours.
    pub fn render(&self) -> String {
        let renderer = Renderer::plain();
        let mut out = String::new();
        for d in &self.items {
            if d.origin.is_none() {
                // Nothing to point at: the message and its help, without an empty source gutter.
                out.push_str(&format!("error: {}", d.message));
                if let Some(help) = &d.help {
                    out.push_str(&format!("\nhelp: {help}"));
                }
                out.push_str("\n\n");
                continue;
            }
            let mut groups: Vec<Group> = Vec::new();
            let title = Level::ERROR.primary_title(d.message.as_str());
            let group = match &d.origin {
                Some(Origin::Span { source, span }) => {
                    let s = &self.sources.0[*source];
                    let span = clamp_span(&s.text, span.clone());
                    title.element(
                        Snippet::source(s.text.as_str())
                            .path(s.name.as_str())
                            .annotation(AnnotationKind::Primary.span(span)),
                    )
                }
                Some(Origin::Env(var)) => title.element(
                    Level::NOTE.message(format!("set by the environment variable `{var}`")),
                ),
                None => Group::with_title(title),
            };
            groups.push(group);
            if let Some(help) = &d.help {
                groups.push(Group::with_title(
                    Level::HELP.secondary_title(help.as_str()),
                ));
            }
            out.push_str(&renderer.render(&groups));
            out.push_str("\n\n");
        }
        let n = self.items.len();
        out.push_str(&format!(
            "error: the recipe has {n} problem{}; nothing was run",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

/// Keeps a span inside the text and on one line (a caret under a whole table is noise).
fn clamp_span(text: &str, span: Range<usize>) -> Range<usize> {
    let mut start = span.start.min(text.len());
    if start > 0 && text[start..].starts_with('\n') {
        start -= text[..start]
            .chars()
            .next_back()
            .map(char::len_utf8)
            .unwrap_or(0);
    }
    let mut end = span.end.min(text.len()).max(start);
    if let Some(nl) = text[start..end].find('\n') {
        end = start + nl;
    }
    if end == start && start < text.len() {
        end = start
            + text[start..]
                .chars()
                .next()
                .map(char::len_utf8)
                .unwrap_or(0);
    }
    start..end
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `word`, if close enough to be a likely misspelling.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `/blocks/2/cells/0/layers` -> `blocks[2].cells[0].layers`.
pub fn display_key(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if out.is_empty() {
        "(recipe)".into()
    } else {
        out
    }
}
