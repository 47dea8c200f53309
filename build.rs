// The web client's build output is embedded (src/web_client.rs); include_dir only tracks the
// files that existed at the last build, so a file added to web/dist would otherwise not
// trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=web/dist");
}
