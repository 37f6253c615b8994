{
  description = "Switchboard: distributed microservices as sandboxed systemd units";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      # MongoDB (SSPL) is the one unfree package used, allowed by name only.
      allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "mongodb-ce" ];

      pkgsFor = lib.genAttrs systems (
        system:
        import nixpkgs {
          inherit system;
          config = { inherit allowUnfreePredicate; };
        }
      );
      forAllSystems = f: lib.genAttrs systems (system: f pkgsFor.${system});

      # The dependency servers, under the names switchboard-stack and the
      # test harness look up on PATH (postgres/initdb, rabbitmq-server and
      # epmd, mongod, mailhog).
      devServers = pkgs: [
        pkgs.postgresql
        pkgs.rabbitmq-server
        pkgs.beamPackages.erlang
        pkgs.mongodb-ce
        pkgs.mailhog
        (pkgs.runCommand "mailhog-lowercase" { } ''
          mkdir -p $out/bin
          ln -s ${lib.getExe pkgs.mailhog} $out/bin/mailhog
        '')
      ];

      # `nix run`: the whole system on loopback, dependencies included.
      devStack =
        pkgs:
        pkgs.writeShellApplication {
          name = "switchboard-dev-stack";
          runtimeInputs = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ] ++ devServers pkgs;
          text = ''
            # RabbitMQ's scripts live in sbin/.
            export PATH="${pkgs.rabbitmq-server}/sbin:$PATH"
            exec switchboard-stack "$@"
          '';
        };

      # Each nixos/tests/<name>.nix is a NixOS VM test, checks.<system>.<name>.
      testFiles = lib.attrNames (
        lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".nix" file) (
          builtins.readDir ./nixos/tests
        )
      );
      vmTest =
        pkgs: file:
        lib.nameValuePair (lib.removeSuffix ".nix" file) (
          pkgs.testers.runNixOSTest (import (./nixos/tests + "/${file}") { inherit self; })
        );

      # The project's Nix files, for the formatting check; nixos/tests/eval is
      # a copy of shared tooling, kept byte for byte as it is.
      nixSources = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.difference nixFiles ./nixos/tests/eval;
      };
      nixFiles = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
    in
    {
      packages = forAllSystems (pkgs: rec {
        switchboard = pkgs.callPackage ./nixos/package.nix { };
        default = switchboard;
        dev-stack = devStack pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.dev-stack;
          meta.description = "Run the whole Switchboard system on loopback with its dependency servers";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.protobuf
            pkgs.nixfmt
          ]
          ++ devServers pkgs;
          env.PROTOC = lib.getExe' pkgs.protobuf "protoc";
          shellHook = ''
            export PATH="${pkgs.rabbitmq-server}/sbin:$PATH"
          '';
        };
      });

      # Sets the package default to this flake's build; the module itself
      # is nixos/module.nix.
      nixosModules.default =
        { lib, pkgs, ... }:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
        in
        {
          imports = [ ./nixos/module.nix ];
          services.switchboard.package = lib.mkDefault self.packages.${system}.default;
        };

      checks = forAllSystems (
        pkgs:
        lib.listToAttrs (map (vmTest pkgs) testFiles)
        // {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          formatting = pkgs.runCommand "switchboard-nixfmt-check" { nativeBuildInputs = [ pkgs.nixfmt ]; } ''
            cd ${nixSources}
            find . -name '*.nix' -print0 | xargs -0 nixfmt --check
            touch $out
          '';
        }
      );

      formatter = forAllSystems (
        pkgs:
        pkgs.nixfmt-tree.override {
          settings.formatter.nixfmt.excludes = [ "nixos/tests/eval/*" ];
        }
      );
    };
}
