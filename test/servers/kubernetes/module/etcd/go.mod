// oomtrail's own wrapper module that builds a real etcd server from the Go module proxy, with the same main as
// etcd's own (go.etcd.io/etcd/v3's main.go calls etcdmain.Main). ../setup.sh rewrites the version.
module oomtrail.test/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.7.3
