// Command durod is the duro server daemon.
package main

import "github.com/duro-io/duro/cmd/durod/server"

func main() { server.Main() }
