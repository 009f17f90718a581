# shellcheck shell=bash
# Helpers shared by scripts/intel-sdk-samples and scripts/intel-sdk-bench (sourced, not run).

# sdk_copy SDK DEST: makes DEST (replacing what was there) a writable copy of the SDK install
# SDK. Copies made without symbolic links (a shared folder, an archive tool) turn each library
# link into a small file holding the target's name: the linker then reads that file as a
# linker script and fails. Such files become links again.
sdk_copy() {
    local sdk=$1 dest=$2 stub target
    rm -rf "$dest" && cp -r "$(cd "$sdk" && pwd)" "$dest" || return
    chmod -R u+w "$dest"
    for stub in "$dest"/lib64/*.so*; do
        [ -f "$stub" ] && [ ! -L "$stub" ] && [ "$(stat -c %s "$stub")" -lt 256 ] || continue
        target=$(tr -d '\n' < "$stub")
        [ -e "$dest/lib64/$target" ] && ln -sf "$target" "$stub"
    done
    return 0
}

# default_sgxemu ROOT: the sgxemu binary to use when none is named: ROOT/target/release/sgxemu
# if built, else `sgxemu` on PATH (prints nothing when there is neither).
default_sgxemu() {
    if [ -x "$1/target/release/sgxemu" ]; then echo "$1/target/release/sgxemu"; else command -v sgxemu || true; fi
}
