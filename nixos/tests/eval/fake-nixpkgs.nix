# A stand-in for `import nixpkgs { system; config; }` as flake.nix calls it:
# the stand-in pkgs of ./stub/pkgs.nix plus the few builders flake.nix,
# nixos/package.nix and nixos/cargo-tests.nix use, each recording its
# arguments instead of building. Nothing here is nixpkgs: it lets
# flake-smoke.nix evaluate the flake's outputs with Nix 2.8 and check their
# shape and wiring.
#
# What differs from nixpkgs on purpose:
#  - pkgs.lib (the `lib` callPackage hands to nixos/*.nix) is nixpkgs' real
#    lib except lib.fileset, which needs builtins.readFileType (Nix >= 2.14):
#    a stand-in of the functions the package uses records the files instead
#    (each path must exist, maybeMissing ones excepted, and lie under root, as
#    the real one requires). flake.nix's own `lib` (nixpkgs.lib) stays real.
#  - rustPlatform.buildRustPackage returns a fake derivation carrying its
#    arguments as attributes (as mkDerivation does), `buildArgs` (all of
#    them), `cargoDeps` (importCargoLock of cargoLock, unless given) and
#    `overrideAttrs`, which merges into the arguments (old = the arguments,
#    not mkDerivation's attributes with the cargo hooks added). Its store path
#    hashes every argument but meta and passthru, so two results share a path
#    only when they would build the same. So do those of mkShell,
#    writeShellApplication and runCommand (every argument).
{
  lib,
  system,
  config,
}:
let
  stub = import ./stub/pkgs.nix {
    inherit lib;
    extraPackages = [
      "protobuf"
      "cargo"
      "rustc"
      "clippy"
      "rustfmt"
      "rust-analyzer"
      "nixfmt"
      "python3"
      "netcat"
      "chromium"
      "chromedriver"
      "prometheus"
    ];
  };
  inherit (stub._stub) mkFake;

  # A JSON-able description of a value, for hashing: paths as strings (no
  # store copy), derivations as their outPath, functions by kind.
  describe =
    value:
    if builtins.isPath value then
      "path:${toString value}"
    else if builtins.isFunction value then
      "<function>"
    else if lib.isDerivation value then
      "drv:${value.outPath}"
    else if builtins.isList value then
      map describe value
    else if builtins.isAttrs value then
      builtins.mapAttrs (_: describe) value
    else
      value;

  # lib.fileset as far as nixos/package.nix uses it; see the header.
  fileset =
    let
      kind = "fileset-stand-in";
      make = paths: {
        _type = kind;
        inherit paths;
      };
      coerce =
        fn: value:
        if value._type or null == kind then
          value.paths
        else if builtins.isPath value then
          if builtins.pathExists value then
            [ (toString value) ]
          else
            throw "lib.fileset.${fn}: Element ${toString value} is a path that does not exist."
        else
          throw "lib.fileset.${fn}: Element is neither a path nor a file set.";
    in
    {
      unions =
        list:
        if builtins.isList list then
          make (lib.concatMap (coerce "unions") list)
        else
          throw "lib.fileset.unions: Argument is of type ${builtins.typeOf list}, but it should be a list instead.";
      union = a: b: make (coerce "union" a ++ coerce "union" b);
      maybeMissing =
        path:
        if builtins.isPath path then
          make (lib.optional (builtins.pathExists path) (toString path))
        else
          throw "lib.fileset.maybeMissing: Argument (${toString path}) is not a path.";
      toSource =
        { root, fileset }:
        let
          rootString = toString root;
          paths = coerce "toSource" fileset;
          outside = lib.filter (p: p != rootString && !lib.hasPrefix "${rootString}/" p) paths;
          files = lib.unique (
            lib.sort lib.lessThan (map (p: lib.removePrefix "${rootString}/" p) paths)
          );
        in
        if !builtins.isPath root then
          throw "lib.fileset.toSource: `root` (${toString root}) is not a path."
        else if outside != [ ] then
          throw "lib.fileset.toSource: `fileset` contains ${builtins.head outside}, outside `root` (${rootString})."
        else
          mkFake {
            name = "source";
            content = builtins.toJSON { inherit files; };
            extra.filesetStandIn = { inherit files; root = rootString; };
          };
    };

  buildRustPackage =
    args:
    let
      name = args.name or "${args.pname}-${args.version}";
      env = args.env or { };
      # mkDerivation's checks of `env`.
      badEnv = lib.filter (
        n:
        let
          v = env.${n};
        in
        !(builtins.isString v || builtins.isBool v || builtins.isInt v || lib.isDerivation v)
      ) (lib.attrNames env);
      clashing = lib.filter (n: args ? ${n}) (lib.attrNames env);
      cargoDeps =
        if args ? cargoDeps then
          args.cargoDeps
        else if args ? cargoLock then
          mkFake {
            name = "cargo-vendor-dir";
            content = "importCargoLock:" + builtins.readFile args.cargoLock.lockFile;
            extra.lockFile = args.cargoLock.lockFile;
          }
        else if args ? cargoHash then
          mkFake {
            name = "${name}-vendor";
            content = "fetchCargoVendor:" + args.cargoHash;
          }
        else
          throw "cargoHash, cargoVendorDir, cargoDeps, or cargoLock must be set";
    in
    if badEnv != [ ] then
      throw "${name}: env.${builtins.head badEnv} must be a string, a bool, an integer or a derivation"
    else if clashing != [ ] then
      throw "${name}: The `env` attribute set cannot contain any attributes passed to derivation. The following attributes are overlapping: ${toString clashing}"
    else
      mkFake {
        inherit name;
        pname = args.pname or (builtins.parseDrvName name).name;
        inherit (args) version;
        content = builtins.toJSON (
          describe (
            removeAttrs args [
              "meta"
              "passthru"
            ]
            // {
              inherit cargoDeps;
            }
          )
        );
        extra =
          args
          // (args.passthru or { })
          // {
            inherit name cargoDeps;
            buildArgs = args;
            meta = (args.meta or { }) // {
              mainProgram = args.meta.mainProgram or args.pname;
            };
            overrideAttrs = f: buildRustPackage (lib.fix (lib.extends (lib.toExtension f) (_: args)));
          };
      };

  pkgs = stub // {
    inherit system config;
    lib = lib // {
      inherit fileset;
    };
    stdenv = stub.stdenv // {
      hostPlatform = stub.stdenv.hostPlatform // {
        inherit system;
      };
    };

    callPackage =
      fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (lib.functionArgs f) pkgs // args);

    rustPlatform.buildRustPackage = buildRustPackage;

    mkShell =
      args:
      mkFake {
        name = "nix-shell";
        content = builtins.toJSON (describe args);
        extra.shellArgs = args;
      };

    writeShellApplication =
      args:
      mkFake {
        inherit (args) name;
        content = builtins.toJSON (describe (removeAttrs args [ "meta" ]));
        extra = {
          applicationArgs = args;
          meta.mainProgram = args.name;
        };
      };

    runCommand =
      name: env: script:
      mkFake {
        inherit name;
        content = builtins.toJSON (describe { inherit env script; });
        extra.commandArgs = { inherit env script; };
      };

    nixfmt-tree = mkFake {
      name = "nixfmt-tree";
      extra.override =
        args:
        mkFake {
          name = "nixfmt-tree";
          extra.overrideArgs = args;
        };
    };

    # The test module itself, to be inspected instead of run.
    testers.runNixOSTest = test: { nixosTest = test; };
  };
in
pkgs
