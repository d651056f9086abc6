//! The config file (`--config`, `HERALD_CONFIG`): TOML, a table per section named after its
//! help heading in lower case (`[server]`, `[database]`, …), each key a setting's flag
//! without `--`. Its values become the settings' defaults before the command line is parsed,
//! so the environment and flags still win, and every setting of `sections` is in it with no
//! code of its own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, Id};

/// The flag naming the config file, and its variable.
pub const FLAG: &str = "--config";
pub const VARIABLE: &str = "HERALD_CONFIG";

/// A setting as the file and the sample name it.
pub struct Setting<'a> {
    pub table: String,
    pub key: &'a str,
    pub arg: &'a Arg,
}

/// Every setting of a command, in the order of its help: those with a help heading.
pub fn settings(command: &clap::Command) -> impl Iterator<Item = Setting<'_>> {
    command.get_arguments().filter_map(|arg| {
        Some(Setting {
            table: arg.get_help_heading()?.to_lowercase().replace(' ', "-"),
            key: arg.get_long()?,
            arg,
        })
    })
}

/// The config file named by the arguments (`--config PATH` or `--config=PATH`, before any
/// `--`) or else by `HERALD_CONFIG`.
pub fn path_in(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1).take_while(|arg| *arg != "--");
    while let Some(arg) = args.next() {
        if arg == FLAG {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(path.into());
        }
    }
    std::env::var_os(VARIABLE).map(PathBuf::from)
}

/// The settings a config file gives, each checked by its setting's own parser.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    values: Vec<(Id, String)>,
}

impl ConfigFile {
    /// Reads the file at `path` against the settings of `command` (`serve`, which has them
    /// all). Unknown tables or keys and values their setting refuses are errors naming the
    /// file and the key.
    pub fn read(path: &Path, command: &clap::Command) -> Result<ConfigFile, clap::Error> {
        let failed = |problem: String| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{}: {problem}\n", path.display()),
            )
        };
        let text = std::fs::read_to_string(path)
            .map_err(|error| failed(format!("cannot be read: {error}")))?;
        let tables = text
            .parse::<toml::Table>()
            .map_err(|error| failed(format!("is not TOML: {error}")))?;
        let known: Vec<Setting> = settings(command).collect();
        let mut table_names: Vec<&str> = known.iter().map(|s| s.table.as_str()).collect();
        table_names.dedup();
        let mut values = Vec::new();
        for (table, entries) in &tables {
            let toml::Value::Table(entries) = entries else {
                return Err(failed(format!(
                    "`{table}` is not a table; settings go in the tables [{}]",
                    table_names.join("], [")
                )));
            };
            let in_table: Vec<&Setting> = known.iter().filter(|s| s.table == *table).collect();
            if in_table.is_empty() {
                return Err(failed(format!(
                    "[{table}] is no section of settings; they are [{}]",
                    table_names.join("], [")
                )));
            }
            for (key, value) in entries {
                let named = format!("[{table}] {key}");
                let Some(setting) = in_table.iter().find(|s| s.key == key) else {
                    let keys: Vec<&str> = in_table.iter().map(|s| s.key).collect();
                    return Err(failed(format!(
                        "{named}: unknown setting; [{table}] has {}",
                        keys.join(", ")
                    )));
                };
                let text =
                    scalar(value).map_err(|problem| failed(format!("{named}: {problem}")))?;
                checked(setting.arg, &text)
                    .map_err(|problem| failed(format!("{named}: {problem}")))?;
                values.push((setting.arg.get_id().clone(), text));
            }
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            values,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file gives the setting with this id.
    pub fn gives(&self, id: &Id) -> bool {
        self.values.iter().any(|(given, _)| given == id)
    }

    /// The command line with the file's values as the defaults of every command that has
    /// their settings.
    pub fn apply(&self, cli: clap::Command) -> clap::Command {
        cli.mut_subcommands(|mut command| {
            for (id, text) in &self.values {
                if command.get_arguments().any(|arg| arg.get_id() == id) {
                    // A required setting the file gives is no longer missing.
                    command =
                        command.mut_arg(id, |arg| arg.required(false).default_value(text.clone()));
                }
            }
            command
        })
    }
}

/// A setting's text as TOML: numbers and booleans bare, anything else a string.
pub fn toml_value(text: &str) -> String {
    if text.parse::<i64>().is_ok() || text == "true" || text == "false" {
        text.to_owned()
    } else {
        toml::Value::String(text.to_owned()).to_string()
    }
}

/// A TOML value as the text a flag would carry.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        other => Err(format!(
            "is {} {}; a setting is a string, a number or a boolean (lists are comma-separated \
             strings)",
            if other.is_array() { "an" } else { "a" },
            other.type_str()
        )),
    }
}

/// Runs `text` through the setting's own parser, as if given by its flag, so a bad value is
/// refused with the file's name rather than when the command is parsed.
fn checked(arg: &Arg, text: &str) -> Result<(), String> {
    let long = arg.get_long().expect("every setting has a flag");
    clap::Command::new("herald")
        .arg(arg.clone().required(false))
        .try_get_matches_from(["herald".to_owned(), format!("--{long}={text}")])
        .map(drop)
        .map_err(|error| {
            let shown = error.to_string();
            let first = shown.lines().next().unwrap_or_default();
            first.trim_start_matches("error: ").to_owned()
        })
}
