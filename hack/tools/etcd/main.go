// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the version
// pinned in hack/versions.env. etcd's own go.mod replaces its sibling modules by
// relative paths, which a dependency cannot use, hence this wrapper.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
