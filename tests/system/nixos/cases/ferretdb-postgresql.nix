# The node of nixos/tests/basic.nix with FerretDB on its PostgreSQL handler
# (services.switchboard.mongodb.ferretdbBackend = "postgresql"), for
# tests/system/module-run: the database and role the module ensures, the
# ordering after PostgreSQL, and entries stored in PostgreSQL.
{ self }:
let
  basic = import ../../../../nixos/tests/basic.nix { inherit self; };
in
{
  name = "switchboard-ferretdb-postgresql";

  nodes.machine = {
    imports = [ basic.nodes.machine ];
    services.switchboard.mongodb = {
      server = "ferretdb";
      ferretdbBackend = "postgresql";
    };
  };

  testScript = builtins.readFile ./ferretdb-postgresql.py;
}
