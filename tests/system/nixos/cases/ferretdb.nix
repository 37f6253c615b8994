# The node of nixos/tests/basic.nix with FerretDB named as the logger's
# MongoDB server, for tests/system/module-run: the module's wiring of
# ferretdb.service (ordering, readiness, state) under systemd.
{ self }:
let
  basic = import ../../../../nixos/tests/basic.nix { inherit self; };
in
{
  name = "switchboard-ferretdb";

  nodes.machine = {
    imports = [ basic.nodes.machine ];
    services.switchboard.mongodb.server = "ferretdb";
  };

  testScript = builtins.readFile ./ferretdb.py;
}
