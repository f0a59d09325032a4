//! Bad input: malformed files and misuse at the public boundary give typed errors
//! that name the cause, never a panic.

mod common;
#[path = "bad_input/fuzz.rs"]
mod fuzz;
