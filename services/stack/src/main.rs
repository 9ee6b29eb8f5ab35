//! `switchboard`: (being written).

fn main() {}
