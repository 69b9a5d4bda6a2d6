// kubectl for hack/kind-up.sh when none is installed: the command tree of the published
// k8s.io/kubectl module, so that nothing outside the Go module proxy is needed.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Client authentication plugins (exec, OIDC), as upstream links them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
