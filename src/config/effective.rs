//! `herald check-config`: every setting as the command line, the environment and the config
//! file made it, where each value came from, secrets redacted.

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::file::{settings, toml_value, ConfigFile};

/// The settings of `command` (`check-config`, which has `serve`'s) as `matches` holds them,
/// in the config file's format, each with its source as a comment.
pub fn effective(
    command: &clap::Command,
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
) -> String {
    let mut listing = String::new();
    let mut table = None;
    for setting in settings(command) {
        if table.as_ref() != Some(&setting.table) {
            listing += &format!(
                "{}[{}]\n",
                if table.is_some() { "\n" } else { "" },
                setting.table
            );
            table = Some(setting.table.clone());
        }
        let arg = setting.arg;
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("flag --{}", setting.key),
            Some(ValueSource::EnvVariable) => {
                let variable = arg.get_env().expect("every setting has a variable");
                format!("env {}", variable.to_string_lossy())
            }
            _ => match file.filter(|file| file.gives(arg.get_id())) {
                Some(file) => format!("file {}", file.path().display()),
                None => "default".to_owned(),
            },
        };
        let raw = matches.get_raw(id).map(|values| {
            let values: Vec<_> = values.map(|v| v.to_string_lossy()).collect();
            values.join(",")
        });
        listing += &match raw {
            // The same settings the environment's listing in `--help` hides.
            Some(_) if arg.is_hide_env_values_set() => {
                format!("{} = \"(redacted)\"  # {source}\n", setting.key)
            }
            Some(value) => format!("{} = {}  # {source}\n", setting.key, toml_value(&value)),
            None => format!("# {} is not set  # {source}\n", setting.key),
        };
    }
    listing
}
