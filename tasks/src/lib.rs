//! The built-in task plugins, and the registry a kiln process starts with.
//!
//! Each plugin is one module named after its kind. Heavy dependencies stay in here, behind the
//! plugin's own module, and never leak into `kiln-engine`'s API.

pub mod command;
pub mod deploy;
#[cfg(feature = "ml")]
pub mod evaluate;
pub mod ml;
pub mod noop;
#[cfg(feature = "ml")]
pub mod process;
#[cfg(feature = "ml")]
pub mod train;

use kiln_engine::PluginRegistry;

/// The registry of every plugin this build provides.
///
/// The ML kinds are declared as planned until their plugins land, so the demo DAG loads with a
/// warning that says so instead of an unknown-kind error.
pub fn builtin_registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    let results = [
        registry.register(command::Command),
        registry.register(noop::Noop),
        registry.register(deploy::Deploy),
        #[cfg(feature = "ml")]
        registry.register(process::Process),
        #[cfg(feature = "ml")]
        registry.register(train::Train),
        #[cfg(feature = "ml")]
        registry.register(evaluate::Evaluate),
    ];
    for result in results {
        // Built-in kinds are distinct constants; a clash is a programming error caught by the
        // `builtin_kinds_are_distinct` test, so it cannot reach users.
        if let Err(error) = result {
            panic!("{error}");
        }
    }
    // `register_planned` leaves alone the kinds this build provides.
    for kind in ["process", "train", "evaluate"] {
        registry.register_planned(
            kind,
            "this build has no ML plugins (the `ml` feature of kiln-tasks)",
        );
    }
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_kinds_are_distinct() {
        let registry = super::builtin_registry();
        let expected: &[&str] = if cfg!(feature = "ml") {
            &["command", "deploy", "evaluate", "noop", "process", "train"]
        } else {
            &["command", "deploy", "noop"]
        };
        assert_eq!(registry.kinds().collect::<Vec<_>>(), expected);
        assert_eq!(
            registry.planned_note("train").is_some(),
            !cfg!(feature = "ml")
        );
    }
}
