#!/bin/sh
# Stands in for ssh in the two-host test: the MPI launcher runs
#   netns_agent.sh [ssh options] HOST COMMAND...
# and this runs COMMAND in the network namespace that holds HOST's address, under a host
# name of its own (Open MPI's TCP transport, like real hosts, needs distinct names).
# GOMETAL_NETNS_HOSTS maps addresses to namespaces: "10.231.0.1=ns0 10.231.0.2=ns1".
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
for pair in $GOMETAL_NETNS_HOSTS; do
  if [ "${pair%%=*}" = "$host" ]; then
    namespace=${pair#*=}
    exec ip netns exec "$namespace" unshare --uts /bin/sh -c "hostname $namespace && $*"
  fi
done
echo "netns_agent.sh: no namespace holds $host (GOMETAL_NETNS_HOSTS=$GOMETAL_NETNS_HOSTS)" >&2
exit 255
