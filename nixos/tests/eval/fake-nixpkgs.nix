# A stand-in for `import nixpkgs { system; config; }` as flake.nix calls it:
# the stand-in pkgs of ./stub/pkgs.nix plus the few builders flake.nix and
# nixos/package.nix use, each recording its arguments instead of building.
# Nothing here is nixpkgs: it lets flake-smoke.nix evaluate the flake's
# outputs with Nix 2.8 and check their shape and wiring.
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
    ];
  };
  inherit (stub._stub) mkFake;

  pkgs = stub // {
    inherit system config;
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

    rustPlatform.buildRustPackage =
      args:
      mkFake {
        name = "${args.pname}-${args.version}";
        pname = args.pname;
        inherit (args) version;
        extra = {
          buildArgs = args;
          meta = args.meta // {
            mainProgram = args.meta.mainProgram or args.pname;
          };
        };
      };

    mkShell =
      args:
      mkFake {
        name = "nix-shell";
        extra.shellArgs = args;
      };

    writeShellApplication =
      args:
      mkFake {
        inherit (args) name;
        content = args.text;
        extra = {
          applicationArgs = args;
          meta.mainProgram = args.name;
        };
      };

    runCommand =
      name: env: script:
      mkFake {
        inherit name;
        content = script;
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
