# What a NixOS test node's configuration would install, for render.py.
#
# Evaluates one node of a NixOS test file (nixos/tests/basic.nix, or any file
# of the same shape: `{ self }: { name; nodes.<node> = module; testScript; }`)
# twice with the same modules:
#  - through ./stub-eval.nix, for its checked JSON summary (units with every
#    option, stand-in services, /etc, users, assertions, warnings);
#  - through lib.evalModules with the same stand-ins, but with a `pkgs` whose
#    writers and pkgs.formats generators also keep what they were given, so
#    that every /etc entry's content can be written (the store paths are the
#    stand-in evaluator's, unchanged), and so that the test script, when it
#    is a function of { nodes, ... }, gets the evaluated node configurations.
# `self.nixosModules.default` is nixos/module.nix with the package defaulting
# to the stand-in pkgs.switchboard, as flake.nix does with its own package.
# The test network is the framework's: node n (in name order) has
# networking.primaryIPAddress 192.168.1.<n> (nixos/lib/testing/network.nix).
#
# Usage: nix-instantiate --eval --strict --json render.nix \
#          --arg libPath /path/to/nixpkgs/lib --arg testFile /abs/test.nix \
#          [--argstr node machine]
{
  libPath,
  testFile,
  node ? "machine",
}:
let
  lib = import libPath;
  repo = ../../..;

  self = {
    outPath = toString repo;
    nixosModules.default =
      { lib, pkgs, ... }:
      {
        imports = [ (repo + "/nixos/module.nix") ];
        services.switchboard.package = lib.mkDefault pkgs.switchboard;
      };
  };

  test = import testFile { inherit self; };
  nodeNames = lib.attrNames test.nodes;
  addressOf = name: "192.168.1.${toString (lib.lists.findFirstIndex (n: n == name) null nodeNames + 1)}";

  extraPackages = [
    "python3"
    "netcat"
  ];

  # Options of the test framework (network.nix) and of qemu-vm.nix that nodes
  # and scripts use.
  frameworkOptions = name: {
    options.networking = {
      primaryIPAddress = lib.mkOption {
        type = lib.types.str;
        default = "";
      };
      primaryIPv6Address = lib.mkOption {
        type = lib.types.str;
        default = "";
      };
      hostName = lib.mkOption {
        type = lib.types.str;
        default = name;
      };
    };
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
    config.networking = {
      primaryIPAddress = addressOf name;
      primaryIPv6Address = "2001:db8:1::${toString (lib.lists.findFirstIndex (n: n == name) null nodeNames + 1)}";
    };
  };

  # The stand-in pkgs, whose generated files remember their content.
  basePkgs = import ./stub/pkgs.nix { inherit lib extraPackages; };
  remember = drv: info: drv // { _render = info; };
  renderPkgs =
    basePkgs
    // {
      writeText = name: text: remember (basePkgs.writeText name text) { inherit text; };
      formats = lib.mapAttrs (
        format: f: args:
        let
          real = f args;
        in
        real
        // {
          generate =
            name: value:
            remember (real.generate name value) {
              inherit format;
              inherit value;
            };
        }
      ) basePkgs.formats;
    };
  utils = import ./stub/utils.nix { inherit lib; };

  evalNode =
    name:
    lib.evalModules {
      modules = [
        ./stub/options
        ./extra-options.nix
        {
          _module.args = {
            pkgs = renderPkgs;
            inherit utils;
            nodes = nodeConfigs;
          };
        }
        test.nodes.${name}
        (frameworkOptions name)
      ];
      specialArgs.modulesPath = "/nonexistent/nixos/modules";
    };
  nodeConfigs = lib.genAttrs nodeNames (name: (evalNode name).config);
  c = nodeConfigs.${node};

  summary = import ./stub-eval.nix {
    inherit lib extraPackages;
    module = test.nodes.${node};
    extraModules = [
      ./extra-options.nix
      (frameworkOptions node)
      { _module.args.nodes = nodeConfigs; }
    ];
  };

  # The content NixOS would put at a store path, where it is known.
  contentOf =
    source:
    if builtins.isPath source then
      { file = toString source; }
    else if builtins.isAttrs source && source ? _render then
      source._render
    else
      { };

  etc = lib.mapAttrsToList (
    _: e:
    {
      inherit (e)
        target
        mode
        user
        group
        ;
      source = if builtins.isAttrs e.source then e.source.outPath else toString e.source;
    }
    // (if e.text != null then { inherit (e) text; } else contentOf e.source)
  ) (lib.filterAttrs (_: e: e.enable) c.environment.etc);

  # nixos/package.nix called as callPackage would, with buildRustPackage
  # returning its arguments (postInstall is what render.py runs); any other
  # argument is a fake package.
  packageFunction = import (repo + "/nixos/package.nix");
  packageArgs = packageFunction (
    lib.mapAttrs (name: _: basePkgs._stub.mkFake { inherit name; }) (lib.functionArgs packageFunction)
    // {
      inherit lib;
      rustPlatform.buildRustPackage = args: args;
    }
  );

  script =
    if !(test ? testScript) then
      null
    else if builtins.isFunction test.testScript then
      test.testScript { nodes = nodeConfigs; }
    else
      test.testScript;
in
{
  name = test.name or "test";
  inherit node nodeNames script summary etc;
  addresses = lib.genAttrs nodeNames addressOf;
  hostName = c.networking.hostName;
  postInstall = packageArgs.postInstall;
  systemPackages = map (p: {
    name = p.name or "";
    path = toString p;
  }) c.environment.systemPackages;
}
