# The node of nixos/tests/basic.nix with services.mongodb as the logger's
# server, for tests/system/module-run: NixOS's mongodb.service (Type=forking,
# PIDFile, User=mongodb) with the module's drop-ins. There is no mongod on
# the host: the container serves it with FerretDB behind mongod's command
# line (tests/system/nixos/standins.py), so this checks the units, not
# MongoDB itself. (A VM test of this node needs mongodb-ce allowed as unfree
# in the pkgs the test is built with.)
{ self }:
let
  basic = import ../../../../nixos/tests/basic.nix { inherit self; };
in
{
  name = "switchboard-mongodb";

  nodes.machine = {
    imports = [ basic.nodes.machine ];
    services.switchboard.mongodb.server = "mongodb";
  };

  testScript = builtins.readFile ./mongodb.py;
}
