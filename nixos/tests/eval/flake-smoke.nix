# Evaluates flake.nix's outputs with Nix 2.8, against nixpkgs' real lib and
# the stand-in nixpkgs of ./fake-nixpkgs.nix, and returns a JSON-able summary
# for flake_smoke.py to check: the outputs per system, the package's build
# arguments, the app, the dev shell, the checks, the formatter, and every
# node of every VM test evaluated through ./stub-eval.nix (so an option the
# tests set that does not exist, or has the wrong type, fails here).
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

  # The `nodes` argument of test nodes and test scripts: addresses as the
  # test framework assigns them (192.168.1.<n>, nodes in name order).
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
        vmOptions
        { _module.args.nodes = fakeNodes test; }
      ];
      extraPackages = [
        "python3"
        "netcat"
      ];
    };

  summariseTest =
    check:
    let
      test = check.nixosTest;
      script =
        if builtins.isFunction test.testScript then
          test.testScript { nodes = fakeNodes test; }
        else
          test.testScript;
    in
    {
      inherit (test) name;
      inherit script;
      nodes = lib.mapAttrs (name: _: evalNode test name) test.nodes;
    };

  package = outputs.packages.${system}.default;
  args = package.buildArgs;
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
      cargoTestFlags
      env
      postInstall
      ;
    lockFile = toString args.cargoLock.lockFile;
    nativeBuildInputs = map (p: p.name) args.nativeBuildInputs;
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
    packages = map (p: p.name) outputs.devShells.${system}.default.shellArgs.packages;
    env = outputs.devShells.${system}.default.shellArgs.env;
  };
  checkNames = lib.attrNames outputs.checks.${system};
  # Its script names the fileset of Nix files; lib.fileset needs Nix >= 2.14.
  formattingName = outputs.checks.${system}.formatting.name;
  formatterExcludes = outputs.formatter.${system}.overrideArgs.settings.formatter.nixfmt.excludes;
  checkPackageIsPackage = outputs.checks.${system}.package.outPath == package.outPath;
  nixosModule = import ./stub-eval.nix {
    inherit lib;
    module = outputs.nixosModules.default;
    config = {
      services.switchboard.enable = true;
      services.switchboard.mailhog.createLocally = true;
    };
  };
  tests = lib.genAttrs testNames (n: summariseTest outputs.checks.${system}.${n});
}
