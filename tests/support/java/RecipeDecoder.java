import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.SchemaStore;

/**
 * A client of the pipeline written from docs/wire-format.md and the .avsc files alone, with
 * Avro's own Java library: it follows the doc's recipe for reading the schema files ("The
 * schemas") and decodes values with BinaryMessageDecoder and a SchemaStore ("Values").
 *
 * <p>Arguments: the folders that hold schemas: a context's package (e.g. contexts/bank/bank,
 * whose files are under schemas/&lt;kind&gt;/) or the runtime's flat schemas/cqrs. Standard
 * input: one value a line, in hex. Standard output: one JSON object a line, in the same order:
 * {"type", "record"} (plus "state", the decoded state record, for a cqrs.AggregateSnapshot),
 * or {"error"} for a value that is not a message of a known schema. Records are read into the
 * latest version of their writer's name.
 */
public final class RecipeDecoder {
  private static final Pattern FILE = Pattern.compile("(\\w+)\\.v(\\d+)\\.avsc");
  private static final ObjectMapper JSON = new ObjectMapper();

  private record SchemaFile(String fullName, int version, Path path, JsonNode json) {}

  private final Map<String, Map<Integer, SchemaFile>> namedTypes = new HashMap<>();
  private final SchemaStore.Cache store = new SchemaStore.Cache();
  private final Map<String, Schema> latest = new HashMap<>();
  private final Map<String, BinaryMessageDecoder<GenericRecord>> decoders = new HashMap<>();

  public static void main(String[] args) throws IOException {
    RecipeDecoder client = new RecipeDecoder();
    List<SchemaFile> files = new ArrayList<>();
    for (String root : args) {
      Path dir = Path.of(root);
      Path schemas = dir.resolve("schemas");
      files.addAll(listFiles(Files.isDirectory(schemas) ? schemas : dir));
    }
    client.load(files);
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      System.out.println(client.decodeLine(line.strip()));
    }
  }

  /** Every .avsc under `dir`: a context's schemas/ folder (one folder a kind) or a flat one. */
  private static List<SchemaFile> listFiles(Path dir) throws IOException {
    List<SchemaFile> out = new ArrayList<>();
    try (Stream<Path> paths = Files.walk(dir)) {
      for (Path path : (Iterable<Path>) paths.sorted()::iterator) {
        Matcher m = FILE.matcher(path.getFileName().toString());
        if (!m.matches()) {
          continue;
        }
        JsonNode json = JSON.readTree(path.toFile());
        String fullName = json.get("namespace").asText() + "." + json.get("name").asText();
        out.add(new SchemaFile(fullName, Integer.parseInt(m.group(2)), path, json));
      }
    }
    return out;
  }

  private void load(List<SchemaFile> files) throws IOException {
    // The named types other files use: those under a types/ folder, and cqrs.EventPosition,
    // which the doc says lives in the flat schemas/cqrs/ folder.
    for (SchemaFile f : files) {
      boolean shared = f.path.getParent().getFileName().toString().equals("types");
      if (shared || f.fullName.equals("cqrs.EventPosition")) {
        namedTypes.computeIfAbsent(f.fullName, k -> new HashMap<>()).put(f.version, f);
      }
    }
    Map<String, Integer> newest = new HashMap<>();
    for (SchemaFile f : files) {
      // One parser per schema version: a parser refuses to define a name twice.
      Schema.Parser parser = new Schema.Parser();
      for (SchemaFile dependency : dependencies(f, new TreeSet<>())) {
        parser.parse(dependency.path.toFile());
      }
      Schema schema = parser.parse(f.path.toFile());
      store.addSchema(schema);
      if (f.version > newest.getOrDefault(f.fullName, 0)) {
        newest.put(f.fullName, f.version);
        latest.put(f.fullName, schema);
      }
    }
  }

  /** The files of the named types `f` uses, dependencies first: version 1 of each unless
   * `f`'s top-level "references" pins another. */
  private List<SchemaFile> dependencies(SchemaFile f, Set<String> seen) {
    List<SchemaFile> out = new ArrayList<>();
    JsonNode pins = f.json.path("references");
    for (String name : usedNames(f.json, new TreeSet<>())) {
      if (name.equals(f.fullName) || !namedTypes.containsKey(name) || !seen.add(name)) {
        continue;
      }
      SchemaFile dependency = namedTypes.get(name).get(pins.path(name).asInt(1));
      out.addAll(dependencies(dependency, seen));
      out.add(dependency);
    }
    return out;
  }

  /** Every string in the schema outside its docs: a named type's full name among them. */
  private static Set<String> usedNames(JsonNode node, Set<String> into) {
    if (node.isTextual()) {
      into.add(node.asText());
    } else if (node.isArray()) {
      node.forEach(child -> usedNames(child, into));
    } else if (node.isObject()) {
      for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> field = it.next();
        if (!field.getKey().equals("doc")) {
          usedNames(field.getValue(), into);
        }
      }
    }
    return into;
  }

  private String decodeLine(String hex) {
    try {
      GenericRecord record = decode(HexFormat.of().parseHex(hex));
      String name = record.getSchema().getFullName();
      StringBuilder out = new StringBuilder("{\"type\":\"" + name + "\",\"record\":");
      out.append(GenericData.get().toString(record));
      if (name.equals("cqrs.AggregateSnapshot")) {
        ByteBuffer state = (ByteBuffer) record.get("state");
        byte[] bytes = new byte[state.remaining()];
        state.duplicate().get(bytes);
        out.append(",\"state\":").append(GenericData.get().toString(decode(bytes)));
      }
      return out.append("}").toString();
    } catch (Exception e) {
      String error = e.getClass().getSimpleName() + ": " + e.getMessage();
      return "{\"error\":" + JSON.valueToTree(error) + "}";
    }
  }

  /** Offset 2, 8 bytes: the writer's fingerprint, little-endian; it names the writer, whose
   * latest version is the reader. BinaryMessageDecoder checks the marker and resolves. */
  private GenericRecord decode(byte[] value) throws IOException {
    if (value.length < 10) {
      throw new IOException("shorter than the 10-byte header");
    }
    long fingerprint = ByteBuffer.wrap(value, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    Schema writer = store.findByFingerprint(fingerprint);
    if (writer == null) {
      throw new IOException("unknown fingerprint " + Long.toHexString(fingerprint));
    }
    BinaryMessageDecoder<GenericRecord> decoder = decoders.computeIfAbsent(
        writer.getFullName(),
        name -> new BinaryMessageDecoder<>(GenericData.get(), latest.get(name), store));
    return decoder.decode(value);
  }
}
