//! Problems found in a site file, reported like a compiler: file, line, column, what is wrong
//! and how to fix it.

use std::fmt;
use std::path::PathBuf;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode,
};

use super::locate::Position;

/// One thing wrong with the site file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub help: Option<String>,
    pub at: Option<Position>,
}

impl Problem {
    pub fn new(message: impl Into<String>, at: Option<Position>) -> Problem {
        Problem {
            message: message.into(),
            help: None,
            at,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }
}

/// Everything wrong with one site file. `Display` gives one plain `file:line:col: message`
/// line per problem; as a [`Diagnostic`] it renders source snippets.
#[derive(Debug)]
pub struct SiteErrors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
    rendered: Vec<ProblemDiagnostic>,
}

impl SiteErrors {
    pub fn new(file: PathBuf, text: String, problems: Vec<Problem>) -> SiteErrors {
        let problems: Vec<Problem> = problems
            .into_iter()
            .map(|p| Problem {
                message: bound_echo(&p.message),
                help: p.help.as_deref().map(bound_echo),
                at: p.at,
            })
            .collect();
        let rendered = problems
            .iter()
            .map(|p| ProblemDiagnostic {
                problem: p.clone(),
                snippet: p
                    .at
                    .is_some_and(|at| line_len_at(&text, at.offset) <= MAX_SNIPPET_LINE),
                source: NamedSource::new(file.display().to_string(), text.clone()),
            })
            .collect();

        SiteErrors {
            file,
            problems,
            rendered,
        }
    }
}

impl fmt::Display for SiteErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {n} problem{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            match p.at {
                Some(at) => write!(
                    f,
                    "  {}:{}:{}: {}",
                    self.file.display(),
                    at.line,
                    at.column,
                    p.message
                )?,
                None => write!(f, "  {}: {}", self.file.display(), p.message)?,
            }
            if let Some(help) = &p.help {
                write!(f, " (help: {help})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for SiteErrors {}

impl Diagnostic for SiteErrors {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("mailbake::site"))
    }
}

impl SiteErrors {
    /// Renders every problem with a snippet of the file around it, like a compiler does.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme);
        let mut out = String::new();
        for diagnostic in &self.rendered {
            if handler.render_report(&mut out, diagnostic).is_err() {
                out.push_str(&diagnostic.problem.message);
            }
            out.push('\n');
        }
        let n = self.problems.len();
        out.push_str(&format!(
            "{}: {n} problem{} found\n",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

/// Longest quoted value a message repeats; the rest is counted, not shown.
const MAX_ECHO_CHARS: usize = 200;
/// Longest message shown whole.
const MAX_MESSAGE_CHARS: usize = 2000;
/// Source lines longer than this get no snippet: the message already shows the start of the
/// value, and a megabyte line would be echoed whole.
const MAX_SNIPPET_LINE: usize = 300;

/// `message` with every backquoted value cut to [`MAX_ECHO_CHARS`], control characters
/// escaped (a value may hold terminal escape sequences), and the whole cut to
/// [`MAX_MESSAGE_CHARS`].
pub fn bound_echo(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        let quoted = i % 2 == 1;
        let count = part.chars().count();
        if quoted && count > MAX_ECHO_CHARS {
            out.extend(part.chars().take(MAX_ECHO_CHARS));
            out.push_str(&format!("… ({} more characters)", count - MAX_ECHO_CHARS));
        } else {
            out.push_str(part);
        }
    }
    let escaped = escape_controls(&out);
    let count = escaped.chars().count();
    if count <= MAX_MESSAGE_CHARS {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(MAX_MESSAGE_CHARS).collect();
    cut.push_str(&format!(
        "… ({} more characters)",
        count - MAX_MESSAGE_CHARS
    ));
    cut
}

/// Control characters other than newline and tab, written as `\u{..}`: the one escaping
/// rule of [`crate::outside`], so an error shows a value as every report does.
pub fn escape_controls(text: &str) -> String {
    crate::outside::lines(text)
}

/// Length in bytes of the line holding byte `offset`.
fn line_len_at(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    end - start
}

#[derive(Debug)]
struct ProblemDiagnostic {
    problem: Problem,
    /// Whether to show the source line (not for very long lines).
    snippet: bool,
    source: NamedSource<String>,
}

impl fmt::Display for ProblemDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for ProblemDiagnostic {}

impl Diagnostic for ProblemDiagnostic {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.problem
            .at
            .filter(|_| self.snippet)
            .map(|_| &self.source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let at = self.problem.at.filter(|_| self.snippet)?;
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some("here".into()),
            at.offset,
            0,
        ))))
    }
}
