//! Writes every target's seeds to seeds/<target>/<name> (run from fuzz/:
//! `cargo run --example seeds`); the files are checked in, this regenerates them.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, seeds) in wisp_guest_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}
