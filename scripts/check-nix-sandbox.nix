# For scripts/check-nix-sandbox: evaluates nixos/package.nix and, when it
# exists, nixos/cargo-tests.nix the way pkgs.callPackage would, with Nix 2.8
# and without nixpkgs, and returns what each hands to
# rustPlatform.buildRustPackage as JSON. Every package argument is a stand-in
# named after its nixpkgs attribute (`systemd`, `util-linux`, ...) whose path
# is /nix-sim/<attribute>, so the script knows which packages a derivation
# declares and can map `${protobuf}/bin/protoc` back to a binary of this host.
#
# Usage:
#   nix-instantiate --eval --strict --json scripts/check-nix-sandbox.nix
#
# Only the few lib functions the two files use are provided: a derivation
# that uses another one fails here with "attribute ... missing", which is the
# cue to add it (as nixpkgs defines it).
let
  fake = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix-sim/${name}";
    meta.mainProgram = name;
  };

  lib = {
    importTOML = path: builtins.fromTOML (builtins.readFile path);
    getExe' = pkg: name: "${pkg}/bin/${name}";
    getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram}";
    optional = cond: item: if cond then [ item ] else [ ];
    optionals = cond: list: if cond then list else [ ];
    optionalString = cond: string: if cond then string else "";
    concatStringsSep = builtins.concatStringsSep;
    # The script copies the files of nixos/source.nix itself; the derivation
    # only has to build its fileset from that list.
    fileset = {
      toSource = { root, fileset }: fake "source";
      unions = list: list;
      maybeMissing = path: path;
    };
    licenses.mit = "mit";
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };

  # rustPlatform.buildRustPackage: the arguments, and the attributes of the
  # result that other files read (src, cargoDeps, version, ...).
  rustPlatform.buildRustPackage =
    args:
    fake args.pname
    // args
    // {
      cargoDeps = args.cargoDeps or (fake "cargo-vendor-dir" // { inherit (args.cargoLock) lockFile; });
      buildRustPackageArgs = args;
    };

  callPackage =
    file: overrides:
    let
      f = import file;
      wanted = builtins.functionArgs f;
      special = {
        inherit lib rustPlatform;
      };
      given = builtins.mapAttrs (name: _: special.${name} or (fake name)) wanted;
    in
    f (given // overrides);

  switchboard = callPackage ../nixos/package.nix { };
  hasTests = builtins.pathExists ../nixos/cargo-tests.nix;
  cargoTests = callPackage ../nixos/cargo-tests.nix { inherit switchboard; };

  # JSON without store copies: paths as strings, packages as their names,
  # functions dropped.
  clean =
    value:
    if builtins.isPath value then
      toString value
    else if builtins.isFunction value then
      null
    else if builtins.isList value then
      map clean value
    else if builtins.isAttrs value then
      if value.type or null == "derivation" then
        {
          package = value.name;
        }
        // (if value ? lockFile then { lockFile = toString value.lockFile; } else { })
      else
        builtins.mapAttrs (_: clean) value
    else
      value;
in
{
  package = clean switchboard.buildRustPackageArgs;
  cargoTests = if hasTests then clean cargoTests.buildRustPackageArgs else null;
}
