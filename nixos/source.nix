# What the Rust build reads, as paths relative to the repository root.
# nixos/package.nix turns these into its source with lib.fileset (and a flake
# only sees git-tracked files), and scripts/check-nix-sandbox reads this list
# (nix-instantiate --eval --json) to copy exactly the same files: one list, so
# that the simulated build sandbox cannot drift from the real one. Editing the
# NixOS module or the scripts therefore does not rebuild the workspace.
{
  # Each must exist.
  required = [
    "Cargo.toml"
    "Cargo.lock"
    "crates"
    "tests"
    "proto"
    "systemd"
  ];
  # Taken when present (lib.fileset.maybeMissing).
  optional = [ "config" ];
}
