//! What the user writes: the recipe types (which generate the JSON schema), layered loading with
//! source positions, and diagnostics. Knows nothing of Burn.

mod diag;
mod load;
mod types;

pub use diag::{Diagnostic, Diagnostics, Origin, Source, Sources, did_you_mean, display_key, line_col};
pub use load::{Loaded, Origins, Overrides, load, schema, schema_diagnostics};
pub use types::*;

/// The schema as committed in `schemas/recipe.schema.json` (pretty JSON, trailing newline).
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).expect("a schema is JSON");
    s.push('\n');
    s
}
