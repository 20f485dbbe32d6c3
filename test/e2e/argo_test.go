//go:build e2e

package e2e

// The Argo suite: Argo Workflows' controller on a one-node cluster on ketch
// runs the workflows a workflow user runs, and the same workflows run on a
// cluster on containerd 1.6 in the same run, for their times.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

var argoVersion = envOr("ARGO_VERSION", "v3.7.3")

// argoWorkflow is one workflow of the suite and what it must do on ketch.
type argoWorkflow struct {
	name     string
	manifest string
	// check judges the finished workflow on ketch.
	check func(t *testing.T, c *cluster, ns string, wf *workflowStatus)
	// note, when set, is what the report says of a run on either runtime.
	note func(t *testing.T, c *cluster, ns string, wf *workflowStatus) string
}

// logLine is the first line of the workflow's step log that starts with
// prefix, or "no <prefix> line".
func (c *cluster) logLine(t *testing.T, ns string, wf *workflowStatus, prefix string) string {
	for _, l := range strings.Split(c.stepLog(t, ns, wf), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return "no " + prefix + " line"
}

// workflowStatus is the part of a Workflow object the checks read.
type workflowStatus struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Status struct {
		Phase   string `json:"phase"`
		Message string `json:"message"`
		Nodes   map[string]struct {
			Type         string `json:"type"`
			TemplateName string `json:"templateName"`
			Phase        string `json:"phase"`
			Message      string `json:"message"`
			Outputs      struct {
				Result *string `json:"result"`
			} `json:"outputs"`
		} `json:"nodes"`
	} `json:"status"`
}

// results are the outputs.result of the Pod nodes of template tmpl.
func (wf *workflowStatus) results(tmpl string) []string {
	var out []string
	for _, n := range wf.Status.Nodes {
		if n.Type == "Pod" && n.TemplateName == tmpl && n.Outputs.Result != nil {
			out = append(out, *n.Outputs.Result)
		}
	}
	return out
}

func (wf *workflowStatus) pods(tmpl string) int {
	n := 0
	for _, node := range wf.Status.Nodes {
		if node.Type == "Pod" && node.TemplateName == tmpl {
			n++
		}
	}
	return n
}

// stepLog is the log of the main container of a workflow's (only) step.
func (c *cluster) stepLog(t *testing.T, ns string, wf *workflowStatus) string {
	t.Helper()
	return c.mustKubectl(t, "", "logs", "-n", ns, "-l", "workflows.argoproj.io/workflow="+wf.Metadata.Name, "-c", "main")
}

func wantPhase(t *testing.T, wf *workflowStatus, phase string) {
	t.Helper()
	if wf.Status.Phase != phase {
		t.Errorf("workflow %s: %s (%s), want %s", wf.Metadata.Name, wf.Status.Phase, wf.Status.Message, phase)
	}
}

var argoWorkflows = []argoWorkflow{
	{
		name: "steps-result",
		manifest: `
metadata: {generateName: steps-result-}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: gen, template: gen}
    - - name: consume
        template: consume
        arguments: {parameters: [{name: msg, value: "{{steps.gen.outputs.result}}"}]}
  - name: gen
    script: {image: "{{busybox}}", command: [sh], source: 'echo hello-42'}
  - name: consume
    inputs: {parameters: [{name: msg}]}
    container:
      image: {{busybox}}
      command: [sh, -c, 'echo "got {{inputs.parameters.msg}}"; test "{{inputs.parameters.msg}}" = hello-42']
`,
		check: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) {
			wantPhase(t, wf, "Succeeded")
			if r := wf.results("gen"); len(r) != 1 || r[0] != "hello-42" {
				t.Errorf("gen's result %q", r)
			}
		},
	},
	{
		name: "dag-fanout-10",
		manifest: `
metadata: {generateName: dag-fanout-}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: gen
        template: square
        withSequence: {count: "10"}
        arguments: {parameters: [{name: num, value: "{{item}}"}]}
      - name: agg
        depends: gen
        template: agg
        arguments: {parameters: [{name: results, value: "{{tasks.gen.outputs.result}}"}]}
  - name: square
    inputs: {parameters: [{name: num}]}
    script: {image: "{{busybox}}", command: [sh], source: 'echo $(( {{inputs.parameters.num}} * {{inputs.parameters.num}} ))'}
  - name: agg
    inputs: {parameters: [{name: results}]}
    script:
      image: {{busybox}}
      command: [sh]
      source: |
        r='{{inputs.parameters.results}}'
        n=$(echo "$r" | tr -d '[] ' | tr ',' '\n' | grep -c .)
        s=$(echo "$r" | tr -d '[] ' | tr ',' '\n' | awk '{s+=$1} END {print s}')
        echo "count=$n sum=$s"
        [ "$n" = 10 ] && [ "$s" = 285 ]
`,
		check: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) {
			wantPhase(t, wf, "Succeeded")
			if n := wf.pods("square"); n != 10 {
				t.Errorf("%d square steps ran, want 10", n)
			}
		},
	},
	{
		name: "retries",
		manifest: `
metadata: {generateName: retries-}
spec:
  entrypoint: main
  templates:
  - name: main
    steps: [[{name: flaky, template: flaky}]]
  - name: flaky
    retryStrategy: {limit: "2", retryPolicy: Always}
    script:
      image: {{busybox}}
      command: [sh]
      source: |
        echo "attempt {{retries}}"
        if [ "{{retries}}" -lt 2 ]; then exit 1; fi
`,
		check: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) {
			wantPhase(t, wf, "Succeeded")
			if n := wf.pods("flaky"); n != 3 {
				t.Errorf("%d attempts, want 3", n)
			}
		},
	},
	{
		// The seed's step: a shell entrypoint runs a TERM-trapping program
		// without exec. At the deadline kubelet stops the pod; with ketch-init
		// in front (podMetadata), TERM reaches the program and it cleans up.
		name: "deadline-cleanup",
		manifest: `
metadata: {generateName: deadline-}
spec:
  entrypoint: main
  podMetadata:
    annotations: {ketch.dev/init: "true"}
  templates:
  - name: main
    steps: [[{name: slow, template: slow}]]
  - name: slow
    activeDeadlineSeconds: 8
    container: {image: "{{workflow}}", command: [sh, -c, /usr/bin/run.sh]}
`,
		check: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) {
			wantPhase(t, wf, "Failed")
			if log := c.stepLog(t, ns, wf); !strings.Contains(log, "main got TERM, cleaning up") {
				t.Errorf("main's clean-up did not run at the deadline; its log:\n%s", log)
			}
		},
		note: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) string {
			return c.logLine(t, ns, wf, "main got TERM")
		},
	},
	{
		// A step that leaves orphans (still running) and zombies (exited,
		// never waited for) behind. ketch-init reaps the zombies at once
		// and ends the orphans when the step's command is done.
		name: "orphans-zombies",
		manifest: `
metadata: {generateName: orphans-}
spec:
  entrypoint: main
  podMetadata:
    annotations: {ketch.dev/init: "true"}
  templates:
  - name: main
    steps: [[{name: messy, template: messy}]]
  - name: messy
    script:
      image: {{busybox}}
      command: [sh]
      source: |
        for i in 1 2 3 4 5 6 7 8 9 10; do sh -c 'sleep 0.2 &'; sh -c 'sleep 600 &'; done
        sleep 2
        echo "zombies=$(grep -sl 'State:.*Z (zombie)' /proc/[0-9]*/status | wc -l)"
`,
		check: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) {
			wantPhase(t, wf, "Succeeded")
			if log := c.stepLog(t, ns, wf); !strings.Contains(log, "zombies=0\n") {
				t.Errorf("main's log %q, want zombies=0", log)
			}
		},
		note: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) string {
			return c.logLine(t, ns, wf, "zombies=")
		},
	},
	{
		// A sidecar that ignores TERM: with ketch.dev/main the runtime ends
		// it when main is done, so the step does not wait for a deadline.
		name: "sidecar-ignores-term",
		manifest: `
metadata: {generateName: sidecar-}
spec:
  entrypoint: main
  activeDeadlineSeconds: 60
  podMetadata:
    annotations: {ketch.dev/main: main, ketch.dev/sidecars: stubborn}
  templates:
  - name: main
    steps: [[{name: with-sidecar, template: with-sidecar}]]
  - name: with-sidecar
    container: {image: "{{busybox}}", command: [sh, -c, 'sleep 3; echo main done']}
    sidecars:
    - name: stubborn
      image: {{busybox}}
      command: [sh, -c, 'trap "" TERM; echo ignoring TERM; while true; do sleep 1; done']
`,
		check: func(t *testing.T, c *cluster, ns string, wf *workflowStatus) {
			wantPhase(t, wf, "Succeeded")
		},
	},
}

// TestArgo runs the workflows on a cluster on ketch and checks each, then
// on a cluster on containerd 1.6, and reports both times.
func TestArgo(t *testing.T) {
	if _, err := os.Stat(fmt.Sprintf("%s/argo-%s/workflow-controller", cacheDir, argoVersion)); err != nil {
		t.Fatalf("%v (test/kube/argo.sh builds Argo; make e2e-argo runs it)", err)
	}
	times := map[string]map[string]time.Duration{}
	t.Run("ketch", func(t *testing.T) {
		// sidecar_grace: what a sidecar gets between TERM and KILL once
		// main is done; Argo's own grace for its pods is 30 s.
		c := startCluster(t, clusterOpts{argo: true, ketchd: "[workflow]\nsidecar_grace = \"5s\"\n"})
		times["ketch"] = c.runWorkflows(t, true)
	})
	t.Run("containerd", func(t *testing.T) {
		c := startCluster(t, clusterOpts{argo: true, endpoint: startContainerd(t).endpoint})
		times["containerd"] = c.runWorkflows(t, false)
	})
	var report strings.Builder
	fmt.Fprintf(&report, "%-22s %10s %12s %7s\n", "workflow", "ketch", "containerd", "ratio")
	for _, w := range argoWorkflows {
		k, d := times["ketch"][w.name], times["containerd"][w.name]
		ratio := "-"
		if k > 0 && d > 0 {
			ratio = fmt.Sprintf("%.2f", k.Seconds()/d.Seconds())
		}
		fmt.Fprintf(&report, "%-22s %9.1fs %11.1fs %7s\n", w.name, k.Seconds(), d.Seconds(), ratio)
	}
	t.Logf("Argo %s workflows, wall time from create to done:\n%s", argoVersion, report.String())
}

// runWorkflows runs each workflow in a namespace of its own, one after
// another, and returns their times. On ketch each is checked; on a peer its
// outcome is only logged.
func (c *cluster) runWorkflows(t *testing.T, check bool) map[string]time.Duration {
	times := map[string]time.Duration{}
	for _, w := range argoWorkflows {
		t.Run(w.name, func(t *testing.T) {
			ns := c.namespace(t)
			c.mustKubectl(t, "", "create", "rolebinding", "-n", ns, "argo-executor", "--clusterrole", "argo-executor", "--serviceaccount", ns+":default")
			manifest := "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\n" + manifestImages.Replace(w.manifest)
			start := time.Now()
			name := strings.TrimSpace(c.mustKubectl(t, manifest, "create", "-n", ns, "-f", "-", "-o", "jsonpath={.metadata.name}"))
			var wf workflowStatus
			waitFor(t, 3*time.Minute, "workflow "+name+" done", func() bool {
				out, err := c.kubectl("", "get", "workflow", "-n", ns, name, "-o", "json")
				if err != nil || json.Unmarshal([]byte(out), &wf) != nil {
					return false
				}
				return wf.Status.Phase == "Succeeded" || wf.Status.Phase == "Failed" || wf.Status.Phase == "Error"
			})
			times[w.name] = time.Since(start)
			if check {
				w.check(t, c, ns, &wf)
			}
			note := wf.Status.Message
			if w.note != nil {
				note = w.note(t, c, ns, &wf)
			}
			t.Logf("%s: %s in %.1fs (%s)", w.name, wf.Status.Phase, times[w.name].Seconds(), note)
		})
	}
	return times
}
