//! Configuration: built-in defaults (`config/default.toml`) < a file.
//!
//! The defaults live in one place, the TOML file that documents every key; a
//! user file is merged over it table by table, then the result is checked
//! against the typed structs (unknown keys are errors that name the key).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backtest::job::BacktestConfig;
use crate::model::ModelConfig;

/// The built-in defaults, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// recur's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The online forecaster.
    pub model: ModelConfig,
    /// File and topic replays.
    pub backtest: BacktestConfig,
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("config {origin}: {message}")]
    Parse {
        /// Which layer (file name or "built-in defaults").
        origin: String,
        /// What was wrong, naming the key.
        message: String,
    },
    /// A value is of the right type but out of range.
    #[error("config: {0}")]
    Invalid(String),
}

/// Merges `over` into `base`, recursing into tables; other values replace.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        message: e.to_string(),
    })
}

impl Config {
    /// The defaults, optionally overlaid with a file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, toml::Table::new())
    }

    /// The defaults < a file < `overrides` (e.g. from command-line flags).
    pub fn load_with(file: Option<&Path>, overrides: toml::Table) -> Result<Self, ConfigError> {
        let mut table = parse_table(DEFAULT_TOML, "built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            merge(&mut table, parse_table(&text, &path.display().to_string())?);
        }
        let origin = match file {
            Some(p) if overrides.is_empty() => p.display().to_string(),
            Some(p) => format!("{} with command-line flags", p.display()),
            None if overrides.is_empty() => "built-in defaults".into(),
            None => "command-line flags".into(),
        };
        merge(&mut table, overrides);
        Self::from_table(table, origin)
    }

    /// Checks a merged table against the typed configuration.
    pub fn from_table(table: toml::Table, origin: String) -> Result<Self, ConfigError> {
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin,
                message: e.to_string(),
            })?;
        cfg.model.validate().map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match_the_struct_defaults() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.model, ModelConfig::default());
    }

    #[test]
    fn a_file_overrides_and_bad_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("recur-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[model]\ncell = \"gru\"\n[model.optimizer]\nlr = 0.01\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&good)).unwrap();
        assert_eq!(cfg.model.cell, crate::model::CellKind::Gru);
        assert_eq!(cfg.model.optimizer.lr, 0.01);
        assert_eq!(cfg.model.hidden, 32);

        let unknown = dir.join("unknown.toml");
        std::fs::write(&unknown, "[model]\nhiden = 8\n").unwrap();
        let err = Config::load(Some(&unknown)).unwrap_err().to_string();
        assert!(err.contains("hiden"), "{err}");

        let zero = dir.join("zero.toml");
        std::fs::write(&zero, "[model]\ntbptt = 0\n").unwrap();
        let err = Config::load(Some(&zero)).unwrap_err().to_string();
        assert!(err.contains("model.tbptt = 0"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
