//! Budgets from a TOML file (`--budget-file`, `./looptop.toml`): a `[budgets]` table of
//! `"lag.p99" = "<20ms"`, `stalls = "==0"` (a number means `<=` it).

use super::budget::{self, Budget, BudgetError};
use std::path::{Path, PathBuf};

/// Why the text of a budget file does not give budgets; each names the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    /// Not TOML.
    #[error("the budget file {}{at} is not valid TOML: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// ` (line L, column C)` where the parser stopped, or empty.
        at: String,
        /// The TOML parser's message.
        message: String,
    },
    /// No `[budgets]` table.
    #[error("the budget file {} has no [budgets] table", path.display())]
    NoTable {
        /// The file.
        path: PathBuf,
    },
    /// `budgets` is a value, not a table.
    #[error("in {}, budgets is not a table", path.display())]
    NotTable {
        /// The file.
        path: PathBuf,
    },
    /// A budget given as something else than a string or a number.
    #[error("in {}, budgets.\"{metric}\" is a {kind}: write it as a string like \"<20ms\"", path.display())]
    NotBudget {
        /// The file.
        path: PathBuf,
        /// The key.
        metric: String,
        /// What it is (`array`, `boolean` …).
        kind: &'static str,
    },
    /// A malformed budget.
    #[error("in {}, budgets.\"{metric}\": {source}", path.display())]
    Budget {
        /// The file.
        path: PathBuf,
        /// The key.
        metric: String,
        /// What is wrong with it.
        source: BudgetError,
    },
}

impl FileError {
    /// How to fix it.
    pub fn hint(&self) -> Option<String> {
        match self {
            FileError::Toml { .. } => Some("budgets go in a [budgets] table: \"lag.p99\" = \"<20ms\"".into()),
            FileError::NoTable { .. } => {
                Some("add one: [budgets] then lines like \"lag.p99\" = \"<20ms\" and stalls = \"==0\"".into())
            }
            FileError::NotTable { .. } => Some("write [budgets] on its own line, then one budget per line".into()),
            FileError::NotBudget { .. } => None,
            FileError::Budget { .. } => Some(budget::syntax_hint()),
        }
    }
}

/// The budgets of the text of a TOML budget file; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Budget>, FileError> {
    let path = || path.to_path_buf();
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| FileError::Toml {
        path: path(),
        at: e.span().map(|s| line_col(text, s.start)).unwrap_or_default(),
        message: e.message().to_string(),
    })?;
    let table = doc.get("budgets").ok_or_else(|| FileError::NoTable { path: path() })?;
    let table = table.as_table().ok_or_else(|| FileError::NotTable { path: path() })?;
    let mut out = Vec::new();
    for (metric, limit) in table {
        let expr = match limit {
            toml::Value::String(s) => format!("{metric}{s}"),
            toml::Value::Integer(n) => format!("{metric}<={n}"),
            toml::Value::Float(x) => format!("{metric}<={x}"),
            other => return Err(FileError::NotBudget { path: path(), metric: metric.clone(), kind: other.type_str() }),
        };
        let b = budget::parse(&expr).map_err(|source| FileError::Budget {
            path: path(),
            metric: metric.clone(),
            source,
        })?;
        out.push(b);
    }
    Ok(out)
}

/// ` (line L, column C)` of a byte offset.
fn line_col(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (line {line}, column {col})")
}
