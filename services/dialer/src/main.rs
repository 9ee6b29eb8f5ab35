//! `dialer`: the campaigns API and the dial loop. Parses the config, starts the runtime,
//! serves until SIGTERM.

fn main() {}
