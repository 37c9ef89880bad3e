// Runs one official Java SDK's default credential chain with the environment it is given and prints
// one line: "ok <detail>" with credentials, or "error <message>" without. The test's private CA
// reaches it through the JVM's truststore (javax.net.ssl.trustStore), not through code.

import com.azure.core.credential.AccessToken;
import com.azure.core.credential.TokenRequestContext;
import com.azure.identity.DefaultAzureCredentialBuilder;
import com.google.auth.oauth2.GoogleCredentials;
import software.amazon.awssdk.auth.credentials.AwsCredentials;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;

public final class Probe {
    private Probe() {}

    static String aws() {
        try (DefaultCredentialsProvider chain = DefaultCredentialsProvider.builder().build()) {
            AwsCredentials credentials = chain.resolveCredentials();
            return "access_key=" + credentials.accessKeyId()
                    + " source=" + credentials.providerName().orElse("unknown");
        }
    }

    static String azure() {
        DefaultAzureCredentialBuilder builder = new DefaultAzureCredentialBuilder();
        // As the Go probe: an application using a private authority host turns instance discovery
        // off in code (no environment variable does it).
        if ("true".equals(System.getenv("SDK_PROBE_DISABLE_INSTANCE_DISCOVERY"))) {
            builder.disableInstanceDiscovery();
        }
        AccessToken token = builder.build()
                .getTokenSync(new TokenRequestContext().addScopes("https://management.azure.com/.default"));
        return "token=" + token.getToken();
    }

    static String google() throws java.io.IOException {
        GoogleCredentials credentials = GoogleCredentials.getApplicationDefault()
                .createScoped("https://www.googleapis.com/auth/cloud-platform");
        credentials.refresh();
        return "token=" + credentials.getAccessToken().getTokenValue()
                + " project=" + credentials.getProjectId();
    }

    public static void main(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: Probe aws|azure|google");
            System.exit(2);
        }
        try {
            String detail;
            switch (args[0]) {
                case "aws":
                    detail = aws();
                    break;
                case "azure":
                    detail = azure();
                    break;
                case "google":
                    detail = google();
                    break;
                default:
                    throw new IllegalArgumentException("unknown cloud " + args[0]);
            }
            System.out.println("ok " + detail);
            // The HTTP clients' non-daemon threads would keep the JVM alive.
            System.exit(0);
        } catch (Exception err) {
            // Every failure is one "error" line for the test to read.
            System.out.println("error " + String.join(" ",
                    (err.getClass().getSimpleName() + ": " + err.getMessage()).trim().split("\\s+")));
            System.exit(1);
        }
    }
}
