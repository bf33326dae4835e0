//! The one template engine for what mailbake renders from data: `layers/` (what every host
//! of a site shares, see [`crate::overlay`]) and `cloud-init/` (what each host gets, see
//! [`crate::seed`]).
//!
//! Both stages render with the environment [`environment`] makes, so they follow the same
//! rules: a variable a template names but the context lacks is an error (a typo must fail
//! the build, not render an empty string into a config file), trailing newlines are kept, and
//! a value reaches a file of a given format only through that format's escaping filter
//! (`yaml` for YAML documents, see [`yaml`]; `word` for whitespace-separated lines, see
//! [`word`]; `textproto` for chasquid.conf's strings, see [`textproto`]; `shell` for files a
//! shell sources, see [`shell`]). What templates may use is [`context`]: typed, so a renamed field
//! is a compile error here rather than an undefined variable in a template.

pub mod acme_ca;
pub mod context;
pub mod mail_policy;
pub mod shell;
pub mod textproto;
pub mod word;
pub mod yaml;

use minijinja::{Environment, UndefinedBehavior};

pub use context::{SEED_MANIFEST_VERSION, SEED_STAGE_DIR, SeedFormat, SiteContext};

/// The strict environment every mailbake template is rendered in, with the escaping filters
/// registered. Templates are added by the caller (`layers/` are read at run time,
/// `cloud-init/` is built into the binary).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_filter("yaml", yaml::filter);
    env.add_filter("word", word::filter);
    env.add_filter("textproto", textproto::filter);
    env.add_filter("shell", shell::filter);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undefined_variable_is_an_error() {
        let env = environment();
        let err = env
            .render_str("{{ site }} {{ stie }}", minijinja::context! { site => "s" })
            .unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::UndefinedError);
    }

    #[test]
    fn trailing_newlines_are_kept() {
        let env = environment();
        let out = env.render_str("a\n\n", minijinja::context! {}).unwrap();
        assert_eq!(out, "a\n\n");
    }
}
