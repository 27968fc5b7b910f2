//! Compile tests of `#[derive(Event)]` and `#[derive(Topic)]`: the pass cases must build
//! and run, the fail cases must fail with the messages in their `.stderr` files (each
//! says what to write instead). Regenerate those with `TRYBUILD=overwrite` after a rustc
//! upgrade, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
