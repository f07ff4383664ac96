//! Problems found in a DAG file, each located by file, line and column where TOML gives a span.

use std::fmt;
use std::path::PathBuf;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The DAG does not load.
    Error,
    /// The DAG loads, but something will not work as written.
    Warning,
}

/// One problem in a DAG file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// 1-based column, where known.
    pub column: Option<usize>,
    /// What the problem is about, such as `task "train"` or `key "schedule"`.
    pub item: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn error(item: Option<String>, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Error,
            line: None,
            column: None,
            item,
            message: message.into(),
        }
    }

    pub(crate) fn warning(item: Option<String>, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(item, message)
        }
    }

    /// Sets the location from a byte offset into `text`.
    pub(crate) fn at(self, text: &str, offset: Option<usize>) -> Problem {
        self.at_indexed(&LineIndex::new(text), text, offset)
    }

    /// [`Problem::at`] with the text's line index built once for all its problems.
    pub(crate) fn at_indexed(mut self, index: &LineIndex, text: &str, offset: Option<usize>) -> Problem {
        if let Some(offset) = offset {
            let (line, column) = index.locate(text, offset);
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    /// Renders the problem prefixed by its file, as `file:line:column: item: message`.
    pub fn display_in<'a>(&'a self, path: &'a std::path::Path) -> impl fmt::Display + 'a {
        struct InFile<'a>(&'a Problem, &'a std::path::Path);
        impl fmt::Display for InFile<'_> {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}", self.1.display())?;
                if let Some(line) = self.0.line {
                    write!(formatter, ":{line}")?;
                    if let Some(column) = self.0.column {
                        write!(formatter, ":{column}")?;
                    }
                }
                write!(formatter, ": {}", self.0)
            }
        }
        InFile(self, path)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            write!(formatter, "warning: ")?;
        }
        if let Some(item) = &self.item {
            write!(formatter, "{item}: ")?;
        }
        write!(formatter, "{}", self.message)
    }
}

/// Every error found in one DAG file (warnings are kept with the DAG when it loads).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DagFileError {
    /// The file.
    pub path: PathBuf,
    /// Everything found, in file order; at least one has [`Severity::Error`].
    pub problems: Vec<Problem>,
}

impl fmt::Display for DagFileError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{}", problem.display_in(&self.path))?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
#[cfg(test)]
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).locate(text, offset)
}

/// Where each line of a text starts, so that locating a problem costs a binary search instead
/// of a scan from the top: a file of 100,000 tasks with a problem each would otherwise take
/// minutes to report.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(index, _)| index + 1))
            .collect();
        LineIndex { starts }
    }

    /// The 1-based line and column (in characters) of a byte offset into `text`, the text
    /// this index was built from.
    pub(crate) fn locate(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line starting at or before the offset.
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line.saturating_sub(1)];
        let column = text[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old scan, kept as the index's reference.
    fn line_and_column_by_scan(text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    #[test]
    fn locations_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        assert_eq!(line_and_column(text, 9), (2, 3));
        assert_eq!(line_and_column(text, 999), (3, 1));
    }

    #[test]
    fn the_index_agrees_with_a_scan_at_every_offset() {
        let text = "id = \"a\"\n\n[[tasks]]\nid = \"é\"\n  x\n";
        let index = LineIndex::new(text);
        for offset in 0..=text.len() + 2 {
            assert_eq!(
                index.locate(text, offset),
                line_and_column_by_scan(text, offset),
                "offset {offset}"
            );
        }
    }
}
