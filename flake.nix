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

      # MongoDB (SSPL) is the one unfree package used (by the dev stack and
      # the dev shell, beside FerretDB), allowed by name only. The NixOS
      # module defaults to FerretDB, so a host needs no such allowance.
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
      # epmd, mongod or ferretdb, mailhog). `switchboard-stack
      # --mongodb-server ferretdb` picks FerretDB, e.g. on CPUs without AVX.
      devServers = pkgs: [
        pkgs.postgresql
        pkgs.rabbitmq-server
        pkgs.beamPackages.erlang
        pkgs.mongodb-ce
        pkgs.ferretdb
        pkgs.mailhog
        pkgs.prometheus
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
            # What the test suite runs besides the servers:
            # systemd-socket-activate, unshare --net, the browser tests.
            pkgs.systemd
            pkgs.util-linux
            pkgs.chromium
            pkgs.chromedriver
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

      # As nix-community/harmonia: every package and dev shell is a check, the
      # Rust tests and clippy run in derivations of their own (the package
      # itself builds without tests), and each nixos/tests/*.nix is a VM test.
      checks = forAllSystems (
        pkgs:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
          switchboard = self.packages.${system}.switchboard;
        in
        lib.listToAttrs (map (vmTest pkgs) testFiles)
        // lib.mapAttrs' (name: lib.nameValuePair "package-${name}") (
          removeAttrs self.packages.${system} [ "default" ]
        )
        // lib.mapAttrs' (name: lib.nameValuePair "devShell-${name}") self.devShells.${system}
        // {
          cargo-tests = pkgs.callPackage ./nixos/cargo-tests.nix { inherit switchboard; };
          clippy = switchboard.overrideAttrs (old: {
            pname = "switchboard-clippy";
            nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
            buildPhase = ''
              runHook preBuild
              cargo clippy --workspace --all-targets --offline -j "$NIX_BUILD_CORES" -- -D warnings
              runHook postBuild
            '';
            installPhase = "touch $out";
            postInstall = "";
            doCheck = false;
          });
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
