package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/pibake/pibake/internal/watch"
	"github.com/pibake/pibake/internal/watchterm"
	"github.com/pibake/pibake/internal/watchweb"
	"github.com/spf13/pflag"
)

// watchOptions are pibake watch's flags.
type watchOptions struct {
	out, listen, ui string
	timeout         time.Duration
	json            bool
	nodes           []string
}

func (o *watchOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.out, "out", "o", "", "output directory the images were built in; its report key checks every report (default: the recipe's output.dir, else ./out)")
	fs.StringVar(&o.listen, "listen", "", "address to listen on (default: every interface, at the port of the recipe's report URL, else "+watch.DefaultPort+")")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up after this long, e.g. 30m (default: wait until every awaited node has registered or stopped)")
	fs.BoolVar(&o.json, "json", false, "print every event as one JSON line")
	fs.StringVar(&o.ui, "ui", "", "also serve a live page of the fleet at this address, e.g. 127.0.0.1:"+watchweb.DefaultPort+" (no host: loopback; any other address gets a URL with an access token, printed once)")
	fs.StringArrayVar(&o.nodes, "node", nil, "wait for this node, or every node of this node block's label (repeatable; default: every node that reports)")
}

var watchCommand = command{
	summary: "receive the nodes' first-boot reports and show the fleet coming up",
	usage:   "RECIPE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		var opts watchOptions
		opts.addFlags(fs)
		return func(ctx context.Context, args []string, o outputs) int { return runWatch(ctx, opts, args, o) }
	},
}

// runWatch is pibake watch: receive the reports of the recipe's nodes and
// show them until every awaited node has registered or stopped.
func runWatch(ctx context.Context, opts watchOptions, args []string, o outputs) int {
	if len(args) != 1 {
		return usageError(o, "watch", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
	}
	if opts.timeout < 0 {
		return usageError(o, "watch", "--timeout is %s; it must be positive", opts.timeout)
	}
	r, _ := loadRecipe(o, args[0])
	if r == nil {
		return exitFailure
	}
	w, err := watch.New(r, opts.out, opts.nodes)
	if err != nil {
		fmt.Fprintf(o.stderr, "pibake watch: %v\n", err)
		return exitFailure
	}
	addr := opts.listen
	if addr == "" {
		addr = watch.DefaultListen(r)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(o.stderr, "pibake watch: %v; is another pibake watch running? Pick another address with --listen (the nodes post to the recipe's report URL)\n", err)
		return exitFailure
	}
	defer ln.Close()
	if opts.ui != "" {
		closeUI, err := w.ServeUI(opts.ui, r.Cluster.Name, o.stderr)
		if err != nil {
			fmt.Fprintf(o.stderr, "pibake watch: %v; pick another address for the page\n", err)
			return exitFailure
		}
		defer closeUI()
	}
	mode := watchterm.Lines
	switch {
	case opts.json:
		mode = watchterm.JSON
	case isTerminal(o.stdout):
		mode = watchterm.Table
	}
	switch w.Run(ctx, ln, opts.timeout, mode, o.stdout, o.stderr) {
	case watch.Registered:
		return exitOK
	case watch.Interrupted:
		return exitInterrupted
	}
	return exitFailure
}
