# The Switchboard workspace as one package: the service binaries and the dev
# stack runner in bin/, the systemd units in lib/systemd/system (with @bindir@
# replaced by this package's bin/), the example configurations in
# share/switchboard. Called from flake.nix with pkgs.callPackage; its tests
# are ./cargo-tests.nix.
{
  lib,
  rustPlatform,
  protobuf,
}:
let
  workspace = (lib.importTOML ../Cargo.toml).workspace;
  sourceFiles = import ./source.nix;

  # Installed binaries: the services and the dev stack runner. The benchmark
  # tool, the test harness and the system tests are built only by the tests
  # (./cargo-tests.nix).
  binaryCrates = [
    "switchboard-broker"
    "switchboard-auth"
    "switchboard-logger"
    "switchboard-mail"
    "switchboard-listener"
    "switchboard-frontend"
    "switchboard-stack"
  ];
in
rustPlatform.buildRustPackage {
  pname = "switchboard";
  inherit (workspace.package) version;

  # Only what the build reads (nixos/source.nix), so that editing the NixOS
  # module or the scripts does not rebuild the workspace.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions (
      map (path: ../. + "/${path}") sourceFiles.required
      ++ map (path: lib.fileset.maybeMissing (../. + "/${path}")) sourceFiles.optional
    );
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = map (crate: "--package=${crate}") binaryCrates;
  # The tests run in a derivation of their own, ./cargo-tests.nix (the
  # flake's checks.cargo-tests), which declares what they need; this one
  # only builds, so that a test change does not rebuild the package.
  doCheck = false;

  # switchboard-wire compiles proto/logs.proto with tonic-prost-build.
  nativeBuildInputs = [ protobuf ];

  env.PROTOC = lib.getExe' protobuf "protoc";

  # A file of its own, so that scripts/check-nix-sandbox runs the same text.
  postInstall = builtins.readFile ./install-units.sh;

  meta = {
    description = "Distributed microservices (API gateway, auth, log store, mail, event listener) as sandboxed systemd units";
    homepage = workspace.package.repository;
    license = lib.licenses.mit;
    mainProgram = "switchboard-stack";
    platforms = lib.platforms.linux;
  };
}
