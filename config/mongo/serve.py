"""The MongoDB stand-in of the test runs: SecantusDB on a loopback port, authentication on.

No MongoDB server can be installed on the machine this project is built on, so scripts/test
starts SecantusDB (config/mongo/requirements.txt), a single-node server that speaks MongoDB's
wire protocol over WiredTiger, with SCRAM-SHA-256 and mongod's built-in roles. Both drivers the
project uses accept it: the Rust `mongodb` 3.x crate and pymongo.

Why SecantusDB and not the other wire-compatible servers on PyPI (scripts/test's MongoDB
paragraph in the README has the same list):
- nx-27017 (NeoSQLite over the wire) has no authentication at all: no SCRAM, no createUser,
  so the shared provisioner's per-session users could not be tested;
- mongoeco's wire server needs Python 3.13 (this machine's is 3.11);
- mongita, tinymongo, litemongo, mongomock and the like are in-process Python libraries with a
  pymongo-like API, not servers: the Rust driver cannot reach them.

What it lacks that our code meets (see README.md): `usersInfo` with `forAllDBs` answers an
empty list, so the shared provisioner's leftover sweep finds a session only through its
database, not through a user that outlived it; it is single-node (no replica set, no
sharding); it is not mongod, so a behaviour only mongod has still needs
STACKLAB_TEST_MONGO_URL pointed at a real server.

Usage (scripts/test does this):
    serve.py --port PORT --storage-path DIR --password-file FILE

The password of the administrator `stacklab` (role root on admin) is read from FILE, which is
removed at once, so it is in no process list or environment. SecantusDB, like mongod, makes
its first user on a server without authentication; that happens here on a second server on an
ephemeral loopback port of this process, which is stopped before the real one, with
authentication required, listens on PORT. SIGTERM or SIGINT stops the server cleanly.
"""

import argparse
import logging
import os
import signal
import sys
import threading

import pymongo
from secantus import SecantusDBServer

ADMIN_USER = "stacklab"


def server(storage_path: str, port: int, require_auth: bool) -> SecantusDBServer:
    # Standalone (no single-node replica-set advertisement), as a plain mongod; no test-only
    # commands (configureFailPoint), which SecantusDB's class turns on by default.
    return SecantusDBServer(
        host="127.0.0.1",
        port=port,
        storage_path=storage_path,
        replica_set_name=None,
        require_auth=require_auth,
        enable_test_commands=False,
        cache_size="256M",
    )


def make_admin(storage_path: str, password: str) -> None:
    boot = server(storage_path, 0, require_auth=False)
    boot.start()
    try:
        client = pymongo.MongoClient(
            boot.uri, directConnection=True, serverSelectionTimeoutMS=10_000
        )
        try:
            client.admin.command("createUser", ADMIN_USER, pwd=password, roles=["root"])
        finally:
            client.close()
    finally:
        boot.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage-path", required=True)
    parser.add_argument("--password-file", required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    with open(args.password_file, encoding="utf-8") as f:
        password = f.readline().strip()
    os.unlink(args.password_file)
    if not password:
        print("serve.py: the password file is empty", file=sys.stderr)
        return 2

    make_admin(args.storage_path, password)
    del password

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    srv = server(args.storage_path, args.port, require_auth=True)
    srv.start()
    stop.wait()
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
