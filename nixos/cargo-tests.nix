# The workspace's Rust tests as a derivation of their own, as
# nix-community/harmonia does it: the package (./package.nix) builds without
# them (doCheck = false), so fixing a test does not rebuild the package, and
# what the tests need is declared here. Called from flake.nix:
#
#   checks.cargo-tests = pkgs.callPackage ./nixos/cargo-tests.nix { inherit switchboard; };
#
# scripts/check-nix-sandbox runs this check phase the way the build sandbox
# does (unprivileged build user, no network, HOME absent) on a machine
# without a Nix that can build nixpkgs.
{
  lib,
  rustPlatform,
  protobuf,
  systemd,
  util-linux,
  switchboard,
}:
rustPlatform.buildRustPackage {
  pname = "switchboard-cargo-tests";
  # The package's source and vendored dependencies: the same files and the
  # same Cargo.lock are tested as are built.
  inherit (switchboard) version src cargoDeps;

  # Only the check phase: `cargo test` builds what it runs. The dev profile
  # (checkType "debug" passes no --profile), as `cargo test` uses it at
  # home: much cheaper to build than the release profile, and no test
  # measures speed.
  dontBuild = true;
  checkType = "debug";
  cargoTestFlags = [ "--workspace" ];
  # No binary of this derivation is installed: nothing to audit.
  auditable = false;

  # switchboard-wire compiles proto/logs.proto with tonic-prost-build.
  nativeBuildInputs = [ protobuf ];
  nativeCheckInputs = [
    # systemd-socket-activate: the services' binary tests get their sockets
    # passed the way the .socket units pass them.
    systemd
    # unshare: the front-end's test without a network of its own probes
    # `unshare --net`, which the sandbox refuses; the test then skips itself
    # with a `skipping:` line (it runs in the project's own test command).
    util-linux
  ];

  env = {
    PROTOC = lib.getExe' protobuf "protoc";
    # The build sandbox has no PostgreSQL, RabbitMQ, MongoDB or MailHog: the
    # test harness skips the tests that need them, each with a `skipping:`
    # line (they run in the project's own test command, scripts/test).
    SWITCHBOARD_SKIP_SERVER_TESTS = "1";
  };

  installPhase = ''
    runHook preInstall
    mkdir -p "$out"
    runHook postInstall
  '';

  meta = {
    description = "The Switchboard workspace's Rust tests that need no servers";
    inherit (switchboard.meta) homepage license platforms;
  };
}
