//! The README's table of settings, rendered from their definitions, and the test that keeps
//! the README's copy the same.

use clap::Arg;

use super::serve_command;

const BEGIN: &str = "<!-- settings:begin -->";
const END: &str = "<!-- settings:end -->";

/// Every setting of `herald serve` in Markdown, a table per help heading: flag, variable,
/// default, help.
fn settings_table() -> String {
    let serve = serve_command();
    let mut tables = String::new();
    let mut heading = None;
    for arg in serve.get_arguments() {
        if arg.get_help_heading() != heading {
            heading = arg.get_help_heading();
            tables += &format!(
                "\n**{}**\n\n| setting | variable | default | description |\n|---|---|---|---|\n",
                heading.expect("every setting is in a section")
            );
        }
        let flag = arg.get_long().expect("every setting has a flag");
        let variable = arg.get_env().expect("every setting has a variable");
        let help = arg.get_help().expect("every setting has a doc line");
        tables += &format!(
            "| `--{flag}` | `{}` | {} | {} |\n",
            variable.to_string_lossy(),
            default_of(arg),
            help.to_string().replace('|', "\\|"),
        );
    }
    tables
}

fn default_of(arg: &Arg) -> String {
    let defaults: Vec<_> = arg
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy())
        .collect();
    match defaults.join(",").as_str() {
        _ if arg.is_required_set() => "required".into(),
        "" => "empty".into(),
        default => format!("`{default}`"),
    }
}

#[test]
fn the_readme_lists_every_setting_as_defined() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let (_, rest) = readme
        .split_once(BEGIN)
        .expect("the README marks the table's start");
    let (listed, _) = rest
        .split_once(END)
        .expect("the README marks the table's end");
    let expected = settings_table();
    assert!(
        listed.trim() == expected.trim(),
        "the README's table of settings is not the definitions'; put this between {BEGIN} \
         and {END}:\n\n{expected}"
    );
}
