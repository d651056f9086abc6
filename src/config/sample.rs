//! `herald config --defaults`: a config file of every setting at its default, each with its
//! help as comments, rendered from the definitions; the required ones are commented out with
//! a placeholder to fill in.

use super::file::{settings, toml_value};

/// Comment lines are wrapped to this many columns.
const WIDTH: usize = 92;

/// The commented sample config file for the settings of `command` (`serve`).
pub fn sample(command: &clap::Command) -> String {
    let mut sample = String::from(
        "# Herald's settings: `herald --config herald.toml` (or HERALD_CONFIG=herald.toml).\n\
         # Each is shown at its default; environment variables and flags override the file.\n",
    );
    let mut table = None;
    for setting in settings(command) {
        if table.as_ref() != Some(&setting.table) {
            sample += &format!("\n[{}]\n", setting.table);
            table = Some(setting.table.clone());
        }
        let arg = setting.arg;
        sample += "\n";
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .expect("every setting has a doc line")
            .to_string();
        for paragraph in help.split("\n\n") {
            sample += &wrapped_comment(paragraph);
        }
        let variable = arg.get_env().expect("every setting has a variable");
        let defaults: Vec<_> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy())
            .collect();
        let line = match defaults.first() {
            Some(_) => format!("{} = {}\n", setting.key, toml_value(&defaults.join(","))),
            None => {
                let why = if arg.is_required_set() {
                    "required"
                } else {
                    "not set by default"
                };
                format!(
                    "# ({why})\n# {} = \"<{}>\"\n",
                    setting.key,
                    variable.to_string_lossy()
                )
            }
        };
        sample += &line;
    }
    sample
}

fn wrapped_comment(paragraph: &str) -> String {
    let mut lines = String::new();
    let mut line = String::from("#");
    for word in paragraph.split_whitespace() {
        if line.len() + 1 + word.len() > WIDTH && line != "#" {
            lines += &line;
            lines += "\n";
            line = String::from("#");
        }
        line += " ";
        line += word;
    }
    lines + &line + "\n"
}
