#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, every part on 127.0.0.1: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet whose
# container runtime is the CRI endpoint given (ketch by default). `make cluster`
# and the kubelet e2e suite both use it.
#
#   cluster.sh up DIR     start it; DIR/admin.kubeconfig is the admin's kubeconfig
#   cluster.sh down DIR   stop what DIR's cluster started (by recorded PID), delete
#                         its pods from the runtime, remove its /etc/hosts line,
#                         unmount what kubelet mounted under DIR, remove DIR
#   cluster.sh kubelet DIR start|stop   stop or start only the kubelet (KUBELET_EXTRA and
#                         FEATURE_GATES, when set, replace up's for this start; KUBELET_STANDALONE=1
#                         starts it without the API server, running static pods only)
#
# Environment (up):
#   RUNTIME_ENDPOINT  CRI endpoint (unix:///run/ketch/ketch.sock)
#   NODE_NAME         the node's name, resolved to 127.0.0.1 through /etc/hosts (ketch-node)
#   KUBE_BIN          kubelet, kube-apiserver, ... (test/kube/build.sh's output)
#   KUBELET_EXTRA     YAML lines appended to the KubeletConfiguration
#   FEATURE_GATES     Kubernetes feature gates (Name=true,Other=false) of every component
#   POD_LOG_DIR       where kubelet keeps container logs (/var/log/pods)
#   ARGO=1            also Argo Workflows' controller (test/kube/argo.sh builds it): its
#                     CRDs, namespace argo, and executor permissions for namespace default
#   ETCD_PORT, API_PORT, KUBELET_PORT   2379, 6443, 10250 (etcd's peer port is
#                     ETCD_PORT+1, the kubelet's healthz KUBELET_PORT-2)
set -eEuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${KETCH_TEST_CACHE:-/var/cache/ketch-test}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
KUBE_BIN=${KUBE_BIN:-$CACHE/kube-$KUBE_VERSION}
MARK="# ketch cluster"

say() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

# The settings of an existing cluster dir win over the environment, so `down`
# and `kubelet` act on what `up` made.
load() {
	DIR=$1
	if [[ -f $DIR/env ]]; then
		# shellcheck disable=SC1091
		source "$DIR/env"
	fi
	RUNTIME_ENDPOINT=${RUNTIME_ENDPOINT:-unix:///run/ketch/ketch.sock}
	NODE_NAME=${NODE_NAME:-ketch-node}
	POD_LOG_DIR=${POD_LOG_DIR:-/var/log/pods}
	ETCD_PORT=${ETCD_PORT:-2379}
	API_PORT=${API_PORT:-6443}
	KUBELET_PORT=${KUBELET_PORT:-10250}
	KUBELET_EXTRA=${KUBELET_EXTRA:-}
	FEATURE_GATES=${FEATURE_GATES:-}
	ARGO=${ARGO:-}
	ARGO_VERSION=${ARGO_VERSION:-v3.7.3}
	PKI=$DIR/pki
}

save_env() {
	local v
	for v in RUNTIME_ENDPOINT NODE_NAME POD_LOG_DIR ETCD_PORT API_PORT KUBELET_PORT KUBELET_EXTRA FEATURE_GATES KUBE_BIN CGROUPS_BEFORE LOGDIRS_BEFORE ARGO ARGO_VERSION; do
		printf '%s=%q\n' "$v" "${!v}"
	done >"$DIR/env"
}

# cert NAME CN ORG EXT: a key and a certificate signed by the cluster CA.
cert() {
	local name=$1 cn=$2 org=$3 ext=$4 subj="/CN=$2"
	[[ -n $org ]] && subj="/O=$org/CN=$cn"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$name.key" \
		-subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
		-extfile <(printf '%s\n' "$ext") -out "$PKI/$name.crt" 2>/dev/null
	rm "$PKI/$name.csr"
}

pki() {
	mkdir -p "$PKI"
	chmod 0700 "$PKI"
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
		-subj "/CN=ketch-cluster-ca" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
	local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
	cert apiserver kube-apiserver "" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	cert admin kubernetes-admin system:masters "$client"
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "$client"
	cert controller-manager system:kube-controller-manager "" "$client"
	cert scheduler system:kube-scheduler "" "$client"
	cert kubelet "system:node:$NODE_NAME" system:nodes "$client"
	# The kubelet's serving certificate, so the API server's logs/exec/port-forward
	# calls reach a kubelet it can verify.
	cert kubelet-server "$NODE_NAME" "" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$NODE_NAME,IP:127.0.0.1"
	openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
	local n
	for n in admin controller-manager scheduler kubelet; do kubeconfig "$n"; done
}

kubeconfig() {
	local n=$1
	cat >"$DIR/$n.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ketch
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $n
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$n.crt")
    client-key-data: $(base64 -w0 "$PKI/$n.key")
contexts:
- name: ketch
  context: {cluster: ketch, user: $n}
current-context: ketch
EOF
	chmod 0600 "$DIR/$n.kubeconfig"
}

# start NAME CMD...: in the background, in a session of its own, its PID recorded.
start() {
	local name=$1
	shift
	setsid "$@" >"$DIR/log/$name.log" 2>&1 </dev/null &
	echo $! >"$DIR/pids/$name"
}

# alive NAME: the recorded process runs.
alive() {
	local pid
	pid=$(cat "$DIR/pids/$1" 2>/dev/null) || return 1
	kill -0 "$pid" 2>/dev/null
}

# wait_for WHAT SECONDS CMD...: until CMD succeeds; on time-out, the logs.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= end)); then
			echo "cluster: $what not ready after ${secs}s" >&2
			tail -n 30 "$DIR"/log/*.log >&2 || true
			return 1
		fi
		sleep 0.2
	done
}

# stop NAME: TERM, then KILL after 10 s, only the recorded PID.
stop() {
	local pid
	pid=$(cat "$DIR/pids/$1" 2>/dev/null) || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$DIR/pids/$1"
}

kctl() { "$KUBE_BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }

etcd_up() {
	mkdir -p "$DIR/etcd"
	chmod 0700 "$DIR/etcd"
	start etcd etcd --name ketch --data-dir "$DIR/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
		--initial-cluster "ketch=http://127.0.0.1:$((ETCD_PORT + 1))" --listen-metrics-urls "" \
		--quota-backend-bytes 1073741824
	wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

# FEATURE_GATES, and for the API server what Debian's etcd 3.4 lacks: WatchList
# (watches silently misbehave without turning it off, node-facts.md).
gates() {
	local g=$FEATURE_GATES
	if [[ $1 == apiserver ]] && etcd --version 2>/dev/null | grep -q 'etcd Version: 3\.4\.'; then
		g=${g:+$g,}WatchList=false
	fi
	[[ -z $g ]] || echo "--feature-gates=$g"
}

# kubelet_gates: FEATURE_GATES as a KubeletConfiguration map.
kubelet_gates() {
	[[ -n $FEATURE_GATES ]] || return 0
	local kv out=""
	for kv in ${FEATURE_GATES//,/ }; do out+="${out:+, }${kv%%=*}: ${kv#*=}"; done
	echo "featureGates: {$out}"
}

apiserver_up() {
	# shellcheck disable=SC2046
	start kube-apiserver "$KUBE_BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
		--endpoint-reconciler-type none \
		--service-cluster-ip-range 10.96.0.0/16 \
		--client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types Hostname \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
		--profiling=false $(gates apiserver)
	wait_for kube-apiserver 60 kctl get --raw /readyz
}

controllers_up() {
	start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
		--kubeconfig "$DIR/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$DIR/controller-manager.kubeconfig" --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
		--secure-port 0 \
		--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
		--cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
		--use-service-account-credentials --allocate-node-cidrs --cluster-cidr 10.244.0.0/16 \
		--service-cluster-ip-range 10.96.0.0/16 --leader-elect=false --profiling=false $(gates)
	start kube-scheduler "$KUBE_BIN/kube-scheduler" \
		--kubeconfig "$DIR/scheduler.kubeconfig" \
		--authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
		--secure-port 0 --leader-elect=false --profiling=false $(gates)
}

kubelet_config() {
	cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $((KUBELET_PORT - 2))
readOnlyPort: 0
containerRuntimeEndpoint: $RUNTIME_ENDPOINT
imageServiceEndpoint: $RUNTIME_ENDPOINT
staticPodPath: $DIR/manifests
podLogsDir: $POD_LOG_DIR
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: $( [[ -n ${KUBELET_STANDALONE:-} ]] && echo false || echo true )}
  x509: {clientCAFile: $PKI/ca.crt}
# Standalone, no API server answers webhooks: a certificate of the cluster's CA is
# then what it takes.
authorization: {mode: $( [[ -n ${KUBELET_STANDALONE:-} ]] && echo AlwaysAllow || echo Webhook )}
# This host: cgroup v1, no systemd, swap accounting off (node-facts.md).
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
failCgroupV1: false
makeIPTablesUtilChains: false
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 2s
nodeStatusUpdateFrequency: 5s
evictionHard: {}
evictionPressureTransitionPeriod: 10s
$(kubelet_gates)
$KUBELET_EXTRA
EOF
}

kubelet_start() {
	kubelet_config
	mkdir -p "$DIR/kubelet" "$DIR/manifests" "$POD_LOG_DIR"
	local api=(--kubeconfig "$DIR/kubelet.kubeconfig")
	[[ -z ${KUBELET_STANDALONE:-} ]] || api=()
	start kubelet "$KUBE_BIN/kubelet" --config "$DIR/kubelet.yaml" "${api[@]}" \
		--root-dir "$DIR/kubelet" --hostname-override "$NODE_NAME" --v 2
	wait_for kubelet 60 curl -sf "http://127.0.0.1:$((KUBELET_PORT - 2))/healthz"
}

# Argo's controller runs on the node as a process with the admin's kubeconfig.
# Without kube-proxy a pod reaches the API server only on the node's loopback:
# every workflow pod is on the host network (workflowDefaults), and the executor
# (init and wait containers) is told where the API server is.
argo_up() {
	local a=$CACHE/argo-$ARGO_VERSION
	[[ -x $a/workflow-controller ]] || die "$a/workflow-controller is missing (test/kube/argo.sh builds it)"
	kctl apply -f "$a/crds" >/dev/null
	kctl wait --for condition=established --timeout 60s -f "$a/crds" >/dev/null
	kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: argo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: workflow-controller-configmap, namespace: argo}
data:
  metricsConfig: |
    enabled: false
  executor: |
    imagePullPolicy: IfNotPresent
    env:
    - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
    - {name: KUBERNETES_SERVICE_PORT, value: "$API_PORT"}
  workflowDefaults: |
    spec:
      hostNetwork: true
---
# What the emissary executor needs (Argo's quick-start executor role); bound to the
# default service account of each namespace that runs workflows.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: argo-executor}
rules:
- apiGroups: [argoproj.io]
  resources: [workflowtaskresults]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: argo-executor, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: argo-executor}
subjects: [{kind: ServiceAccount, name: default, namespace: default}]
EOF
	start argo-controller env LEADER_ELECTION_DISABLE=true DEFAULT_REQUEUE_TIME=1s \
		"$a/workflow-controller" --kubeconfig "$DIR/admin.kubeconfig" --namespace argo \
		--executor-image "127.0.0.1:5000/ketch-test/argoexec:$ARGO_VERSION" --executor-image-pull-policy IfNotPresent
	wait_for argo-controller 60 curl -sf http://127.0.0.1:6060/healthz
}

node_ready() {
	[[ $(kctl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

kubepods_cgroups() { find /sys/fs/cgroup -maxdepth 2 -type d -name kubepods 2>/dev/null; }

# The QoS and pod cgroups kubelet made, once the runtime has removed its
# containers' (rmdir takes only empty ones), when none were there before up.
kubepods_remove() {
	[[ ${CGROUPS_BEFORE:-1} == 0 ]] || return 0
	local d
	for d in $(kubepods_cgroups); do
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

hosts_add() {
	grep -qxF "127.0.0.1 $NODE_NAME $MARK $DIR" /etc/hosts || echo "127.0.0.1 $NODE_NAME $MARK $DIR" >>/etc/hosts
}

hosts_remove() {
	# In place: /etc/hosts may be a bind mount that a rename would break.
	local kept
	kept=$(grep -vxF "127.0.0.1 $NODE_NAME $MARK $DIR" /etc/hosts || true)
	printf '%s\n' "$kept" >/etc/hosts
}

up() {
	load "$1"
	[[ ! -e $DIR/pids ]] || die "$DIR holds a cluster already (cluster.sh down $DIR first)"
	local b
	for b in kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl; do
		[[ -x $KUBE_BIN/$b ]] || die "$KUBE_BIN/$b is missing (test/kube/build.sh builds it)"
	done
	command -v etcd >/dev/null || die "etcd is missing (apt-get install etcd-server)"
	mkdir -p "$DIR/pids" "$DIR/log"
	# kubelet makes /kubepods in every cgroup hierarchy and leaves it when it stops.
	CGROUPS_BEFORE=$(kubepods_cgroups | wc -l)
	LOGDIRS_BEFORE=$( [[ -d /var/log/containers || -d $POD_LOG_DIR ]] && echo 1 || true)
	trap 'echo "cluster: up failed; taking it down" >&2; down "$DIR"' ERR
	save_env
	hosts_add
	pki
	etcd_up
	apiserver_up
	controllers_up
	kubelet_start
	wait_for "node $NODE_NAME" 60 node_ready
	[[ -z $ARGO ]] || argo_up
	trap - ERR
	say "ready: node $NODE_NAME on $RUNTIME_ENDPOINT, kubeconfig $DIR/admin.kubeconfig"
}

# Pods kubelet made are labelled with their Kubernetes namespace; those are the
# cluster's, anything else on the runtime is left alone.
runtime_pods_remove() {
	local crictl=${CRICTL:-$CACHE/bin/crictl} ids
	[[ -x $crictl ]] || crictl=$(command -v crictl || true)
	[[ -n $crictl ]] || return 0
	ids=$("$crictl" -r "$RUNTIME_ENDPOINT" pods -o json 2>/dev/null |
		jq -r '.items[]? | select(.labels["io.kubernetes.pod.namespace"] != null) | .id') || return 0
	for id in $ids; do
		"$crictl" -r "$RUNTIME_ENDPOINT" stopp "$id" >/dev/null 2>&1 || true
		"$crictl" -r "$RUNTIME_ENDPOINT" rmp -f "$id" >/dev/null 2>&1 || true
	done
}

down() {
	load "$1"
	[[ -d $DIR ]] || return 0
	local uids=""
	if alive kube-apiserver && alive kubelet; then
		# kubelet removes a deleted pod's logs at its next garbage collection,
		# which a kubelet stopped now would not see: remembered, removed below.
		uids=$(kctl get pods -A -o jsonpath='{.items[*].metadata.uid}' 2>/dev/null || true)
		# Workflows first: their controller would make new pods.
		stop argo-controller
		kctl delete workflows --all --all-namespaces --wait=false >/dev/null 2>&1 || true
		# Let kubelet tear its pods down (volumes, logs) before it goes.
		kctl delete pods --all --all-namespaces --grace-period 1 --wait=false >/dev/null 2>&1 || true
		local end=$((SECONDS + 60))
		while ((SECONDS < end)) && [[ -n $(kctl get pods -A -o name 2>/dev/null) ]]; do sleep 0.5; done
	fi
	local p
	for p in argo-controller kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$p"; done
	runtime_pods_remove
	kubepods_remove
	local u l
	for u in $uids; do rm -rf "$POD_LOG_DIR"/*_"$u"; done
	# kubelet links every container's log into /var/log/containers (a fixed path).
	for l in /var/log/containers/*.log; do
		[[ -L $l && $(readlink "$l") == "$POD_LOG_DIR/"* ]] && rm -f "$l"
	done
	[[ -n ${LOGDIRS_BEFORE:-} ]] || rmdir /var/log/containers "$POD_LOG_DIR" 2>/dev/null || true
	# What kubelet mounted for pods it could not tear down (secrets, emptyDirs).
	local m
	for m in $(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	hosts_remove
	rm -rf "$DIR"
	say "down: $DIR removed"
}

case "${1:-}" in
up) up "${2:?usage: cluster.sh up DIR}" ;;
down) down "${2:?usage: cluster.sh down DIR}" ;;
kubelet)
	# KUBELET_EXTRA or FEATURE_GATES given here replace up's for this start.
	extra=${KUBELET_EXTRA-$'\x01'} fg=${FEATURE_GATES-$'\x01'}
	load "${2:?usage: cluster.sh kubelet DIR start|stop}"
	[[ $extra == $'\x01' ]] || KUBELET_EXTRA=$extra
	[[ $fg == $'\x01' ]] || FEATURE_GATES=$fg
	case "${3:-}" in
	start) kubelet_start ;;
	stop) stop kubelet ;;
	*) die "usage: cluster.sh kubelet DIR start|stop" ;;
	esac
	;;
*) die "usage: cluster.sh up|down|kubelet DIR" ;;
esac
