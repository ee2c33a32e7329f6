//! The collector of a recipe's problems: each resolve step reports into it and goes on, so one
//! `validate` lists every problem, each pointing at the recipe text.

use crate::recipe::{Diagnostic, Diagnostics, Loaded};

/// Problems found while resolving a recipe.
pub(crate) struct Problems<'a> {
    loaded: &'a Loaded,
    items: Vec<Diagnostic>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(loaded: &'a Loaded) -> Problems<'a> {
        Problems {
            loaded,
            items: Vec::new(),
        }
    }

    /// A problem with the value at the JSON pointer `ptr`, with an optional hint.
    pub(crate) fn err(&mut self, ptr: &str, msg: String, help: Option<String>) {
        let origin = self.loaded.origins.value(ptr);
        self.push(Diagnostic::new(msg).at(origin), help);
    }

    /// A problem with the key at the JSON pointer `ptr` (its name, not its value).
    pub(crate) fn err_at_key(&mut self, ptr: &str, msg: String, help: Option<String>) {
        let origin = self.loaded.origins.key(ptr);
        self.push(Diagnostic::new(msg).at(origin), help);
    }

    fn push(&mut self, d: Diagnostic, help: Option<String>) {
        self.items.push(match help {
            Some(h) => d.help(h),
            None => d,
        });
    }

    /// Whether nothing is wrong so far.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every problem, rendered against the recipe's sources.
    pub(crate) fn finish(self) -> Result<(), Diagnostics> {
        if self.items.is_empty() {
            Ok(())
        } else {
            Err(self.loaded.diagnostics(self.items))
        }
    }
}
