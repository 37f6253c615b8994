# The package's postInstall (nixos/package.nix reads this file), run by stdenv
# with the source tree as working directory: the units of systemd/ into
# lib/systemd/system with @bindir@ replaced by this package's bin/, their
# drop-ins (the shared sandbox, switchboard-.service.d/) beside them, and the
# example configurations into share/switchboard. NixOS' systemd.packages
# links a package's unit directories file by file (lndir), drop-ins included. scripts/check-nix-sandbox
# runs the same text against a fake $out and checks the result.
for unit in systemd/*.service systemd/*.socket systemd/*.target; do
  install -Dm444 -t "$out/lib/systemd/system" "$unit"
done
for dropin in systemd/*.d/*.conf; do
  install -Dm444 -t "$out/lib/systemd/system/$(basename "$(dirname "$dropin")")" "$dropin"
done
for unit in "$out"/lib/systemd/system/*.service; do
  substituteInPlace "$unit" --replace-fail '@bindir@' "$out/bin"
done

if [ -d config ]; then
  for example in config/*.toml; do
    install -Dm444 -t "$out/share/switchboard" "$example"
  done
fi
