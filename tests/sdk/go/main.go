// Command sdk-probe runs one official Go SDK's default credential chain with the environment it
// is given and prints one line: "ok <detail>" with credentials, or "error <message>" without.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/aws/aws-sdk-go-v2/config"
	"golang.org/x/oauth2/google"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sdk-probe aws|azure|google")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	detail, err := probe(ctx, os.Args[1])
	if err != nil {
		// One line, as the test reads the last line of the output.
		fmt.Printf("error %s\n", strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
	fmt.Printf("ok %s\n", detail)
}

func probe(ctx context.Context, cloud string) (string, error) {
	switch cloud {
	case "aws":
		cfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			return "", err
		}
		creds, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("access_key=%s source=%s", creds.AccessKeyID, creds.Source), nil
	case "azure":
		// With an authority host that is no Microsoft cloud (an emulator, a private cloud), MSAL Go
		// first asks login.microsoftonline.com about it (instance discovery), which knows no such
		// host; no env var turns that off, so such apps set the option in code, as the probe does
		// when the test says so.
		options := &azidentity.DefaultAzureCredentialOptions{
			DisableInstanceDiscovery: os.Getenv("SDK_PROBE_DISABLE_INSTANCE_DISCOVERY") == "true",
		}
		cred, err := azidentity.NewDefaultAzureCredential(options)
		if err != nil {
			return "", err
		}
		token, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://management.azure.com/.default"}})
		if err != nil {
			return "", err
		}
		return "token=" + token.Token, nil
	case "google":
		creds, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/cloud-platform")
		if err != nil {
			return "", err
		}
		token, err := creds.TokenSource.Token()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("token=%s project=%s", token.AccessToken, creds.ProjectID), nil
	}
	return "", fmt.Errorf("unknown cloud %q", cloud)
}
