# The package's postInstall (nixos/package.nix reads this file), run by stdenv
# with the source tree as working directory: the units of systemd/ into
# lib/systemd/system with @bindir@ replaced by this package's bin/, and the
# example configurations into share/switchboard. scripts/check-nix-sandbox
# runs the same text against a fake $out and checks the result.
for unit in systemd/*.service systemd/*.socket systemd/*.target; do
  install -Dm444 -t "$out/lib/systemd/system" "$unit"
done
for unit in "$out"/lib/systemd/system/*.service; do
  substituteInPlace "$unit" --replace-fail '@bindir@' "$out/bin"
done

if [ -d config ]; then
  for example in config/*.toml; do
    install -Dm444 -t "$out/share/switchboard" "$example"
  done
fi
