# Evaluates flake.nix's outputs with Nix 2.8, against nixpkgs' real lib and
# the stand-in nixpkgs of ./fake-nixpkgs.nix, and returns a JSON-able summary
# for flake_smoke.py to check: the outputs per system, the package's build
# arguments, the app, the dev shell, the checks (which derivation each is,
# cargo-tests' and clippy's build arguments), the formatter, and every node
# of every VM test evaluated through ./stub-eval.nix (so an option the tests
# set that does not exist, or has the wrong type, fails here).
#
# Usage: nix-instantiate --eval --strict --json flake-smoke.nix --arg libPath /path/to/nixpkgs/lib
{ libPath }:
let
  lib = import libPath;
  flake = import ../../../flake.nix;

  nixpkgs = {
    inherit lib;
    # `import nixpkgs { system; config; }` imports outPath.
    outPath = builtins.toFile "fake-nixpkgs.nix" ''
      { system, config }: import ${toString ./fake-nixpkgs.nix} { lib = import ${toString libPath}; inherit system config; }
    '';
  };

  outputs = flake.outputs {
    inherit nixpkgs;
    self = outputs // {
      outPath = toString ../../..;
    };
  };

  system = "x86_64-linux";
  pkgs = import nixpkgs.outPath {
    inherit system;
    config = { };
  };

  # NixOS options of the test framework and of qemu-vm.nix that the test
  # nodes set, declared as in nixos/modules/virtualisation/qemu-vm.nix.
  vmOptions = {
    options.virtualisation = {
      memorySize = lib.mkOption {
        type = lib.types.ints.positive;
        default = 1024;
      };
      cores = lib.mkOption {
        type = lib.types.ints.positive;
        default = 1;
      };
      diskSize = lib.mkOption {
        type = lib.types.nullOr lib.types.ints.positive;
        default = 1024;
      };
    };
  };

  # The `nodes` argument of test nodes: addresses as the test framework
  # assigns them (192.168.1.<n>, nodes in name order).
  fakeNodes =
    test:
    let
      names = lib.attrNames test.nodes;
    in
    lib.listToAttrs (
      lib.imap1 (
        n: name: lib.nameValuePair name { networking.primaryIPAddress = "192.168.1.${toString n}"; }
      ) names
    );

  evalNode =
    test: name:
    import ./stub-eval.nix {
      inherit lib;
      module = test.nodes.${name};
      extraModules = [
        ./extra-options.nix
        vmOptions
        { _module.args.nodes = fakeNodes test; }
      ];
      extraPackages = [
        "python3"
        "netcat"
      ];
    };

  # The `nodes` argument of a test script: in NixOS each node's config. Here
  # each node's evaluated summary (./stub-eval.nix: services, with
  # services.switchboard, systemd units, environment, firewall, users; store
  # paths as strings) plus its address; reading anything else fails with
  # "attribute ... missing".
  scriptNodes =
    test: nodes:
    lib.recursiveUpdate (lib.mapAttrs (
      _: node: removeAttrs node [ "failedAssertions" "warnings" "switchboard" ]
    ) nodes) (fakeNodes test);

  summariseTest =
    check:
    let
      test = check.nixosTest;
      nodes = lib.mapAttrs (name: _: evalNode test name) test.nodes;
      script =
        if builtins.isFunction test.testScript then
          test.testScript { nodes = scriptNodes test nodes; }
        else
          test.testScript;
    in
    {
      inherit (test) name;
      inherit script nodes;
    };

  package = outputs.packages.${system}.default;
  args = package.buildArgs;
  checks = outputs.checks.${system};
  names = map (p: p.name);
  # The check is exactly that derivation (same store path).
  same = a: b: builtins.isAttrs a && (a.outPath or null) == b.outPath;
  testNames = lib.filter (n: outputs.checks.${system}.${n} ? nixosTest) (
    lib.attrNames outputs.checks.${system}
  );
in
{
  outputNames = lib.attrNames outputs;
  systems = lib.mapAttrs (_: lib.attrNames) {
    inherit (outputs)
      packages
      apps
      devShells
      checks
      formatter
      ;
  };
  packageNames = lib.attrNames outputs.packages.${system};
  package = {
    inherit (package) name;
    inherit (args)
      pname
      version
      cargoBuildFlags
      env
      postInstall
      ;
    # buildRustPackage's default is true.
    doCheck = args.doCheck or true;
    cargoTestFlags = args.cargoTestFlags or null;
    lockFile = toString args.cargoLock.lockFile;
    cargoDepsLockFile = toString package.cargoDeps.lockFile;
    nativeBuildInputs = names args.nativeBuildInputs;
    # The files of its source (lib.fileset stand-in of ./fake-nixpkgs.nix),
    # and the list nixos/source.nix gives for them.
    sourceFiles = package.src.filesetStandIn.files;
    sourceRoot = package.src.filesetStandIn.root;
    sourceList = import ../../source.nix;
    mainProgram = package.meta.mainProgram;
    sameAsSwitchboard = outputs.packages.${system}.switchboard.outPath == package.outPath;
  };
  app = {
    inherit (outputs.apps.${system}.default) type program;
    inherit (outputs.packages.${system}.dev-stack.applicationArgs) text;
    runtimeInputs = map (p: p.name) outputs.packages.${system}.dev-stack.applicationArgs.runtimeInputs;
    devStackPath = outputs.packages.${system}.dev-stack.outPath;
  };
  devShell = {
    packages = names outputs.devShells.${system}.default.shellArgs.packages;
    env = outputs.devShells.${system}.default.shellArgs.env;
    shellHook = outputs.devShells.${system}.default.shellArgs.shellHook or "";
  };
  checkNames = lib.attrNames checks;
  # Missing ones are false here; checkNames says which.
  checkIs = {
    package-switchboard = same (checks.package-switchboard or null) outputs.packages.${system}.switchboard;
    package-dev-stack = same (checks.package-dev-stack or null) outputs.packages.${system}.dev-stack;
    devShell-default = same (checks.devShell-default or null) outputs.devShells.${system}.default;
  };
  cargoTests =
    let
      drv = checks.cargo-tests;
      a = drv.buildArgs;
    in
    {
      inherit (drv) name;
      inherit (a) pname;
      doCheck = a.doCheck or true;
      dontBuild = a.dontBuild or false;
      checkType = a.checkType or a.buildType or "release";
      cargoTestFlags = a.cargoTestFlags or [ ];
      checkFlags = a.checkFlags or [ ];
      env = a.env or { };
      installPhase = a.installPhase or null;
      nativeBuildInputs = names (a.nativeBuildInputs or [ ]);
      nativeCheckInputs = names (a.nativeCheckInputs or [ ]);
      # The package's own version, source and vendored dependencies.
      sameVersion = a.version == package.version;
      sameSrc = same a.src package.src;
      sameCargoDeps = same drv.cargoDeps package.cargoDeps;
      lockFile = toString (drv.cargoDeps.lockFile or "");
      homepage = drv.meta.homepage or null;
    };
  clippy =
    let
      drv = checks.clippy;
      a = drv.buildArgs;
    in
    {
      inherit (drv) name;
      inherit (a) pname;
      doCheck = a.doCheck or true;
      buildPhase = a.buildPhase or null;
      installPhase = a.installPhase or null;
      postInstall = a.postInstall or "";
      nativeBuildInputs = names (a.nativeBuildInputs or [ ]);
      sameVersion = a.version == package.version;
      sameSrc = same a.src package.src;
      sameCargoDeps = same drv.cargoDeps package.cargoDeps;
      env = a.env or { };
    };
  # Its script names the fileset of Nix files; lib.fileset needs Nix >= 2.14.
  formattingName = outputs.checks.${system}.formatting.name;
  formatterExcludes = outputs.formatter.${system}.overrideArgs.settings.formatter.nixfmt.excludes;
  nixosModule = import ./stub-eval.nix {
    inherit lib;
    module = outputs.nixosModules.default;
    extraModules = [ ./extra-options.nix ];
    config = {
      services.switchboard.enable = true;
      services.switchboard.mailhog.createLocally = true;
    };
  };
  tests = lib.genAttrs testNames (n: summariseTest checks.${n});
}
