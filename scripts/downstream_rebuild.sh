#!/usr/bin/env bash
# Times what a user waits for after a one-line change in a release binary that
# uses rime (README "Building a program that uses rime"): a crate with the
# README loop, a path dependency on this repository, one `cargo build
# --release`, then an edit of one number and a timed `cargo build --release`.
#
#   scripts/downstream_rebuild.sh [dir]   # default dir: /tmp/rime_downstream
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/tmp/rime_downstream}
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "readme_loop"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
rime = { package = "rime-nn", path = "$repo" }

[workspace]
TOML
# the README's training loop (its first rust block), as a program
awk '/^```rust/ && !done {on=1; next} on && /^```/ {on=0; done=1} on && !/^# /' \
    "$repo/README.md" > "$dir/loop.rs"
{
    grep '^use ' "$dir/loop.rs"
    echo 'fn main() -> rime::Result<()> {'
    grep -v '^use ' "$dir/loop.rs"
    echo '    println!("ok");'
    echo '    Ok(())'
    echo '}'
} > "$dir/src/main.rs"
rm "$dir/loop.rs"
cd "$dir"
cargo build --release --quiet
sed -i 's/for _ in 0\.\.20 {/for _ in 0..21 {/' src/main.rs
uptime
time cargo build --release --quiet
./target/release/readme_loop
