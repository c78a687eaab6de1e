// A small Java program (tests/services.rs): writes and reads back a file in the directory it is
// given, asks for the time zone and locale, and runs a task on a thread pool. Exits 1 on a
// wrong read-back.
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ForkJoinPool;

public class FilesAndThreads {
    public static void main(String[] args) throws Exception {
        Path file = Paths.get(args[0], "lines.txt");
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < 1000; i++) {
            lines.add("line " + i);
        }
        Files.write(file, lines);
        int read = Files.readAllLines(file).size();
        System.out.println("read " + read + " lines");
        System.out.println("zone " + java.time.ZoneId.systemDefault());
        System.out.println(new ForkJoinPool(4).submit(() -> "pool ok").get());
        System.exit(read == 1000 ? 0 : 1);
    }
}
